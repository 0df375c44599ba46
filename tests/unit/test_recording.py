"""Call recording: the stereo recorder's timeline, pause, bounds and file; retention; config."""

from __future__ import annotations

import asyncio
import os
import threading
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest

from warmline.calls.call import Call
from warmline.calls.recording import (
    DEFAULT_CONSENT,
    CallRecordings,
    RecordingConflict,
    RecordingMode,
    RecordingPhase,
    RecordingSettings,
)
from warmline.config import ConfigError, load
from warmline.media import recorder as recorder_module
from warmline.media.recorder import FRAME, MAX_QUEUED_FRAMES, RATE, StereoRecorder
from warmline.records.retention import DAY, sweep_recordings


def tone(hz: float, frames: int = 1, level: float = 8000) -> np.ndarray:
    t = np.arange(FRAME * frames) / RATE
    return (level * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def channels(path: Path) -> tuple[np.ndarray, np.ndarray, wave._wave_params]:
    with wave.open(str(path), "rb") as wav:
        params = wav.getparams()
        data = np.frombuffer(wav.readframes(params.nframes), dtype="<i2")
    return data[0::2], data[1::2], params


def frame_energy(samples: np.ndarray, index: int) -> float:
    frame = samples[index * FRAME:(index + 1) * FRAME].astype(np.float64)
    return float(np.sqrt(np.mean(frame**2))) if len(frame) else 0.0


def finish(recorder: StereoRecorder) -> None:
    recorder.stop().result(timeout=5)


def test_each_tick_takes_one_frame_a_channel_and_silence_fills_the_gaps(tmp_path: Path) -> None:
    recorder = StereoRecorder(tmp_path / "call.wav")
    caller, other = tone(440), tone(1000)
    for index in range(10):
        if index in (2, 3, 7):
            recorder.received(caller)  # the caller talks in frames 2, 3 and 7
        if index >= 5:
            recorder.sent(other)  # the AI from frame 5 on
        recorder.tick()
    finish(recorder)
    left, right, params = channels(tmp_path / "call.wav")
    assert (params.nchannels, params.sampwidth, params.framerate) == (2, 2, 8000)
    assert params.nframes == 10 * FRAME
    spoke = [i for i in range(10) if frame_energy(left, i) > 1000]
    heard = [i for i in range(10) if frame_energy(right, i) > 1000]
    assert spoke == [2, 3, 7] and heard == [5, 6, 7, 8, 9]
    assert np.array_equal(left[2 * FRAME:3 * FRAME], caller)
    assert np.array_equal(right[9 * FRAME:10 * FRAME], other)
    assert recorder.seconds == pytest.approx(0.2)


def test_a_late_packet_waits_for_the_next_tick_and_the_channels_stay_in_step(
        tmp_path: Path) -> None:
    recorder = StereoRecorder(tmp_path / "call.wav")
    recorder.tick()  # the caller's first packet is late: nothing yet
    recorder.received(tone(440))
    recorder.received(tone(440))  # ... then two at once (jitter)
    recorder.sent(tone(1000))
    for _ in range(3):
        recorder.tick()
    finish(recorder)
    left, right, _ = channels(tmp_path / "call.wav")
    assert [frame_energy(left, i) > 1000 for i in range(4)] == [False, True, True, False]
    assert [frame_energy(right, i) > 1000 for i in range(4)] == [False, True, False, False]
    assert len(left) == len(right) == 4 * FRAME


def test_pause_writes_silence_to_both_channels_from_the_next_frame(tmp_path: Path) -> None:
    recorder = StereoRecorder(tmp_path / "call.wav")

    def talk(frames: int) -> None:
        for _ in range(frames):
            recorder.received(tone(440))
            recorder.sent(tone(1000))
            recorder.tick()

    talk(5)
    recorder.received(tone(440))  # queued before the pause: never written
    recorder.pause()
    talk(5)  # the card number
    recorder.resume()
    talk(5)
    finish(recorder)
    left, right, _ = channels(tmp_path / "call.wav")
    for index in range(15):
        expected = not 5 <= index < 10
        assert (frame_energy(left, index) > 1000) is expected, index
        assert (frame_energy(right, index) > 1000) is expected, index
    assert not left[5 * FRAME:10 * FRAME].any() and not right[5 * FRAME:10 * FRAME].any()


def test_a_sender_faster_than_the_clock_keeps_only_half_a_second_queued(tmp_path: Path) -> None:
    recorder = StereoRecorder(tmp_path / "call.wav")
    for _ in range(1000):  # 20 s of audio arriving with no tick
        recorder.received(tone(440))
        recorder.sent(tone(1000))
    assert all(len(queue) == MAX_QUEUED_FRAMES * FRAME * 2 for queue in recorder._queues)
    finish(recorder)


def test_a_stalled_disk_costs_bounded_memory_and_the_loss_is_counted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recorder_module, "MAX_PENDING_CHUNKS", 3)
    writer = ThreadPoolExecutor(max_workers=1)
    release = threading.Event()
    recorder = StereoRecorder(tmp_path / "call.wav", writer=writer)
    writer.submit(release.wait, 10)  # the disk hangs behind the file's creation
    for _ in range(10 * recorder_module.CHUNK_FRAMES):  # 10 s of audio
        recorder.received(tone(440))
        recorder.tick()
    assert recorder._pending == 3  # chunks held for the disk: no more
    assert recorder.lost_seconds == pytest.approx(7.0)
    release.set()
    finish(recorder)
    _, _, params = channels(tmp_path / "call.wav")
    assert params.nframes == 3 * recorder_module.CHUNK_FRAMES * FRAME
    writer.shutdown()


def test_the_file_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    recorder = StereoRecorder(tmp_path / "deep" / "call.wav")
    recorder.tick()
    finish(recorder)
    assert (tmp_path / "deep" / "call.wav").stat().st_mode & 0o777 == 0o600


def test_the_sweep_deletes_recordings_past_their_retention(tmp_path: Path) -> None:
    now = 1_800_000_000.0
    ages = {"old.wav": 31, "recent.wav": 29, "notes.txt": 400}
    for name, days in ages.items():
        path = tmp_path / name
        path.write_bytes(b"x")
        os.utime(path, (now - days * DAY, now - days * DAY))
    (tmp_path / "link.wav").symlink_to(tmp_path / "old.wav")
    assert sweep_recordings(tmp_path, 0, lambda: now) == []  # 0 keeps everything
    assert sweep_recordings(tmp_path, 30, lambda: now) == [tmp_path / "old.wav"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.wav", "notes.txt",
                                                           "recent.wav"]
    assert sweep_recordings(tmp_path / "missing", 30, lambda: now) == []


def test_the_recording_section_is_parsed_and_bad_keys_are_named(tmp_path: Path) -> None:
    config_file = tmp_path / "w.toml"
    config_file.write_text('[recording]\nmode = "handoff"\nconsent = ""\n'
                           'directory = "/var/rec"\nretention_days = 30\n')
    settings = load(config_file).recording.build()
    assert settings == RecordingSettings(RecordingMode.HANDOFF, "", Path("/var/rec"), 30)
    config_file.write_text("")
    default = load(config_file).recording.build()
    assert default.mode is RecordingMode.OFF and default.consent == DEFAULT_CONSENT
    assert default.folder(Path("recs")) == Path("recs") / "recordings"
    config_file.write_text('[recording]\nmode = "always"\nretention_days = -1\n')
    with pytest.raises(ConfigError) as error:
        load(config_file)
    problems = "\n".join(error.value.problems)
    assert "w.toml:2: recording.mode:" in problems
    assert "w.toml:3: recording.retention_days:" in problems


class FakeLeg:
    """What CallRecordings uses of the caller's leg: play (the consent) and capture."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.tap: object | None = None

    def play(self, player: Any) -> Any:
        self.log.append(f"play {len(player.samples)}")
        done = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.05, done.set_result, None)
        return SimpleNamespace(done=done)

    def capture(self, tap: object | None) -> None:
        self.log.append("capture" if tap is not None else "capture off")
        self.tap = tap


class FakeTts:
    def synthesize(self, text: str, rate: int = 8000) -> np.ndarray:
        return tone(300, 10)


def test_the_consent_plays_before_anything_is_kept_and_each_step_is_journaled(
        tmp_path: Path) -> None:
    events: list[tuple[str, str, dict[str, Any]]] = []
    leg = FakeLeg()
    call = cast(Call, SimpleNamespace(id="call-1", ended=False,
                                      caller=SimpleNamespace(media=leg)))
    recordings = CallRecordings(RecordingSettings(RecordingMode.CALL), tmp_path, FakeTts(),
                                lambda *event: events.append(event))

    async def scenario() -> None:
        started = recordings.start(call)
        assert recordings.phase("call-1") is RecordingPhase.ANNOUNCING
        with pytest.raises(RecordingConflict, match="already"):
            recordings.start(call)
        with pytest.raises(RecordingConflict, match="announcing"):
            recordings.pause(call)
        assert await started
        assert leg.log == ["play 1600", "capture"]
        recordings.pause(call)
        with pytest.raises(RecordingConflict, match="paused"):
            recordings.pause(call)
        recordings.resume(call)
        done = recordings.stop(call)
        assert done is not None
        await done
        with pytest.raises(RecordingConflict, match="not being recorded"):
            recordings.stop(call)
        with pytest.raises(RecordingConflict, match="one recording a call"):
            recordings.start(call)  # the first file is never overwritten

    asyncio.run(scenario())
    assert [kind for _, kind, _ in events] == [
        "call.recording_started", "call.recording_paused", "call.recording_resumed",
        "call.recording_stopped"]
    assert events[0][2] == {"path": "call-1.wav"}
    assert leg.log[-1] == "capture off"
    assert (tmp_path / "recordings" / "call-1.wav").is_file()


def test_a_caller_gone_during_the_consent_is_never_recorded(tmp_path: Path) -> None:
    events: list[tuple[str, str, dict[str, Any]]] = []
    leg = FakeLeg()
    call = SimpleNamespace(id="call-2", ended=False, caller=SimpleNamespace(media=leg))
    recordings = CallRecordings(RecordingSettings(RecordingMode.CALL), tmp_path, FakeTts(),
                                lambda *event: events.append(event))

    async def scenario() -> bool:
        started = recordings.start(cast(Call, call))
        task = asyncio.ensure_future(started)
        await asyncio.sleep(0.01)
        call.ended = True
        assert recordings.call_ended(cast(Call, call)) is None  # nothing kept yet
        return await task

    assert asyncio.run(scenario()) is False
    assert events == [] and "capture" not in leg.log
    assert recordings.phase("call-2") is None
    assert not (tmp_path / "recordings" / "call-2.wav").exists()


def test_the_file_is_served_with_the_api_token_only(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from warmline.api import build_app

    recordings = CallRecordings(RecordingSettings(), tmp_path, FakeTts(), lambda *_: None)
    recordings.folder.mkdir()
    (recordings.folder / "call-1.wav").write_bytes(b"RIFF....WAVE")
    (tmp_path / "secret.wav").write_bytes(b"not a recording")
    engine = cast(Any, SimpleNamespace(calls={}, recordings=recordings,
                                         known_call=lambda call_id: None,
                                         shown_handoff=lambda handoff_id: None))
    api = {"Authorization": "Bearer T"}
    with TestClient(build_app(engine, api_token="T")) as locked:
        assert locked.get("/recordings/call-1.wav").status_code == 401
        served = locked.get("/recordings/call-1.wav", headers=api)
        assert served.status_code == 200 and served.content == b"RIFF....WAVE"
        assert locked.get("/recordings/call-2.wav", headers=api).status_code == 404
        assert locked.get("/recordings/..%2Fsecret.wav", headers=api).status_code == 404
        recordings._closing["call-1"] = cast(Any, object())  # its last chunks on the way
        assert locked.get("/recordings/call-1.wav", headers=api).status_code == 409
    with TestClient(build_app(engine)) as open_api:  # no token: recordings are not served
        refused = open_api.get("/recordings/call-1.wav")
        assert refused.status_code == 403 and "token" in refused.text
