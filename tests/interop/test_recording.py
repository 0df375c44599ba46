"""Call recording through a real `warmline serve` and a sipp caller that talks.

[recording] mode = "call": the caller hears the consent before anything is
kept, then the file holds the caller (a 600 Hz tone sent by sipp) on the left
and what the caller heard (the hold audio, a 1500 Hz tone) on the right. A
pause over the API with the call's own token is silence in both channels for
exactly the span the records say; the file is served with the API token only.
"""

from __future__ import annotations

import asyncio
import io
import sqlite3
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.interop.peers import (
    capture_udp,
    free_port,
    relay_block,
    render_scenario,
    rtp_arrivals,
    run_sipp,
    start_serve,
    stop_serve,
    wait_until_serving,
)
from warmline.media import g711

pytestmark = pytest.mark.interop
TOKEN = "recording-test-token"
CALLER_HZ, HEARD_HZ = 600, 1500


def tone(hz: float, seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * 8000)) / 8000
    return (9000 * np.sin(2 * np.pi * hz * t)).astype(np.int16)


def band_energy(samples: np.ndarray, hz: float) -> float:
    """Spectral magnitude within 50 Hz of ``hz``."""
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    freqs = np.fft.rfftfreq(len(samples), 1 / 8000)
    return float(spectrum[np.abs(freqs - hz) < 50].sum())


def write_files(tmp_path: Path, sip_port: int, http_port: int) -> tuple[Path, Path]:
    caller_audio = tmp_path / "caller.ulaw"
    caller_audio.write_bytes(g711.ulaw_encode(tone(CALLER_HZ, 2.0)))
    hold = tmp_path / "hold.wav"
    with wave.open(str(hold), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(tone(HEARD_HZ, 1.0).tobytes())
    media = relay_block()
    config = tmp_path / "warmline.toml"
    config.write_text(f"""
[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
[http]
listen = "127.0.0.1:{http_port}"
api_token_env = "WARMLINE_RECORDING_TOKEN"
[media]
ports = "{media}-{media + 40}"
codecs = ["PCMU"]
hold_audio = "{hold}"
[storage]
records = "{tmp_path / 'records'}"
[recording]
mode = "call"
consent = "This call is recorded."
""")
    return config, caller_audio


async def drive(http_port: int, sipp: asyncio.Future[Any]) -> dict[str, Any]:
    """Pause and resume the recording mid-call; then fetch the file every way there is."""
    api = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as client:
        call: dict[str, Any] = {}
        for _ in range(200):
            listed = (await client.get("/calls", headers=api)).json()
            if listed:
                call = listed[0]
                break
            await asyncio.sleep(0.05)
        assert call, "no call listed within 10 s"
        own = {"Authorization": f"Bearer {call['token']}"}
        status = f"/calls/{call['id']}/recording"
        phases = []
        for _ in range(200):
            phase = (await client.get(status, headers=own)).json()["recording"]
            phases.append(phase)
            if phase == "recording":
                break
            await asyncio.sleep(0.05)
        assert phases[0] == "announcing" and phases[-1] == "recording", phases
        await asyncio.sleep(1.5)
        paused = await client.post(status, headers=own, json={"action": "pause"})
        assert paused.status_code == 200 and paused.json()["recording"] == "paused"
        again = await client.post(status, headers=own, json={"action": "pause"})
        assert again.status_code == 409 and "action" in again.text
        bad = await client.post(status, headers=own, json={"action": "rewind"})
        assert bad.status_code == 422 and "action" in bad.text
        unknown = await client.post("/calls/call-nope/recording", headers=api,
                                    json={"action": "stop"})
        assert unknown.status_code == 404
        await asyncio.sleep(1.5)
        resumed = await client.post(status, headers=own, json={"action": "resume"})
        assert resumed.json()["recording"] == "recording"
        result = await sipp
        assert result.returncode == 0, result.output[-3000:]
        await asyncio.sleep(0.5)  # the BYE's 200 went out; the file is being closed
        path = f"/recordings/{call['id']}.wav"
        refused = [(await client.get(path)).status_code,
                   (await client.get(path, headers=own)).status_code,
                   (await client.get(path, params={"token": call["token"]})).status_code]
        assert refused == [401, 401, 401]
        served = await client.get(path, headers=api)
        assert served.status_code == 200, served.text
        assert served.headers["content-type"] == "audio/wav"
        missing = await client.get("/recordings/call-nope.wav", headers=api)
        assert missing.status_code == 404
        return {"call": call, "wav": served.content}


def events_of(records: Path, call_id: str) -> list[tuple[float, str, dict[str, Any]]]:
    import json

    with sqlite3.connect(records / "records.db") as db:
        rows = db.execute("SELECT at, kind, data FROM warmline_events WHERE call_id = ? "
                          "ORDER BY at", (call_id,)).fetchall()
    return [(at, kind, json.loads(data)) for at, kind, data in rows]


def test_a_recorded_call_with_consent_pause_and_the_file_served_with_the_token(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sip_port, http_port, media_port = free_port(), free_port(), free_port() // 2 * 2
    config, caller_audio = write_files(tmp_path, sip_port, http_port)
    monkeypatch.setenv("WARMLINE_RECORDING_TOKEN", TOKEN)
    scenario = render_scenario("caller_rtp_stream.xml", tmp_path, audio=str(caller_audio),
                               seconds="7000")
    server = start_serve(["--config", str(config)], tmp_path)
    try:
        wait_until_serving(server, http_port)
        with capture_udp(tmp_path, media_port, seconds=20) as pcap:
            async def run() -> dict[str, Any]:
                sipp = asyncio.ensure_future(run_sipp(
                    ["-sf", str(scenario), f"127.0.0.1:{sip_port}", "-p", str(free_port()),
                     "-mi", "127.0.0.1", "-mp", str(media_port), "-m", "1"],
                    tmp_path, timeout=30))
                return await drive(http_port, sipp)

            outcome = asyncio.run(run())
    finally:
        assert stop_serve(server) == 0, server.log()
    call_id = outcome["call"]["id"]
    events = events_of(tmp_path / "records", call_id)
    kinds = [kind for _, kind, _ in events]
    recording_kinds = [kind for kind in kinds if "recording" in kind]
    assert recording_kinds == ["call.recording_started", "call.recording_paused",
                               "call.recording_resumed", "call.recording_stopped"], kinds
    by_kind = {kind: (at, data) for at, kind, data in events}
    started_at, started = by_kind["call.recording_started"]
    assert started == {"path": f"{call_id}.wav"}
    assert (tmp_path / "records" / "recordings" / f"{call_id}.wav").is_file()

    # the consent reached the caller before the recording began
    arrivals = rtp_arrivals(pcap, media_port)
    before = [at for at, _, _ in arrivals if at < started_at]
    assert len(before) > 50, "the caller heard under a second of audio before the recording"

    with wave.open(io.BytesIO(outcome["wav"]), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        stereo = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    left, right = stereo[0::2], stereo[1::2]
    seconds = by_kind["call.recording_stopped"][1]["seconds"]
    assert len(left) == round(seconds * 8000) and 3.5 < seconds < 6.5

    pause = round(by_kind["call.recording_paused"][1]["at"] * 8000)
    resume = round(by_kind["call.recording_resumed"][1]["at"] * 8000)
    assert 1.0 * 8000 < resume - pause < 2.5 * 8000
    assert not left[pause:resume].any() and not right[pause:resume].any()

    for span in (slice(1600, pause - 800), slice(resume + 800, len(left) - 1600)):
        said, heard = left[span], right[span]
        assert len(said) > 2000, span
        assert band_energy(said, CALLER_HZ) > 20 * band_energy(said, HEARD_HZ)
        assert band_energy(heard, HEARD_HZ) > 20 * band_energy(heard, CALLER_HZ)
        assert np.sqrt(np.mean(said.astype(np.float64) ** 2)) > 2000
        assert np.sqrt(np.mean(heard.astype(np.float64) ** 2)) > 2000


def test_handoff_mode_announces_then_records_then_transfers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """mode = "handoff": nothing is kept while the call is with the AI; the transfer asked
    for waits for the consent, then the recording and the REFER go out in that order."""
    from tests.interop.test_sipp import SUCCESS_TAIL

    sip_port, http_port, media_port = free_port(), free_port(), free_port() // 2 * 2
    config, _ = write_files(tmp_path, sip_port, http_port)
    config.write_text(config.read_text().replace('mode = "call"', 'mode = "handoff"'))
    monkeypatch.setenv("WARMLINE_RECORDING_TOKEN", TOKEN)
    scenario = render_scenario("refer_notify_bye.xml", tmp_path, final="200 OK",
                               tail=SUCCESS_TAIL)
    api = {"Authorization": f"Bearer {TOKEN}"}

    async def drive_transfer() -> tuple[str, str, list[str]]:
        sipp = asyncio.ensure_future(run_sipp(
            ["-sf", str(scenario), f"127.0.0.1:{sip_port}", "-p", str(free_port()),
             "-mi", "127.0.0.1", "-mp", str(media_port), "-m", "1"], tmp_path, timeout=30))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}",
                                     headers=api) as client:
            for _ in range(200):
                listed = (await client.get("/calls")).json()
                if listed:
                    break
                await asyncio.sleep(0.05)
            call_id = listed[0]["id"]
            status = f"/calls/{call_id}/recording"
            before = (await client.get(status)).json()["recording"]
            transfer = f"/calls/{call_id}/transfer"
            body = {"to": "sip:human@127.0.0.1:5999", "mode": "blind"}
            accepted = await client.post(transfer, json=body)
            assert accepted.status_code == 202, accepted.text
            during = (await client.get(status)).json()["recording"]
            second = await client.post(transfer, json=body)  # one handoff at a time
            assert second.status_code == 409 and accepted.json()["handoff_id"] in second.text
            result = await sipp
            assert result.returncode == 0, result.output[-3000:]
            return call_id, str(accepted.json()["handoff_id"]), [str(before), str(during)]

    server = start_serve(["--config", str(config)], tmp_path)
    try:
        wait_until_serving(server, http_port)
        call_id, handoff_id, phases = asyncio.run(drive_transfer())
    finally:
        assert stop_serve(server) == 0, server.log()
    assert phases == ["None", "announcing"]
    events = events_of(tmp_path / "records", call_id)
    kinds = [kind for _, kind, _ in events]
    order = [kinds.index(kind) for kind in ("handoff.requested", "call.recording_started",
                                            "handoff.accepted", "call.recording_stopped")]
    assert order == sorted(order), kinds
    at = {kind: when for when, kind, _ in events}
    assert at["call.recording_started"] - at["handoff.requested"] > 0.8  # the consent played
    assert (tmp_path / "records" / "recordings" / f"{call_id}.wav").is_file()
    assert handoff_id
