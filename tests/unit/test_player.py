"""WAV loading at any rate/width/channels, resampling without aliasing, looping, ringback."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from warmline.media.player import AudioFileError, Player, load_wav, ringback


def write_wav(path: Path, samples: np.ndarray, rate: int, width: int = 2,
              channels: int = 1) -> Path:
    scaled = np.repeat(samples, channels)
    if width == 1:
        data = (scaled * 127 + 128).astype(np.uint8).tobytes()
    else:
        data = (scaled * 32767).astype("<i2").tobytes()
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(width)
        writer.setframerate(rate)
        writer.writeframes(data)
    return path


def tone(frequency: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    return 0.5 * np.sin(2 * np.pi * frequency * np.arange(int(rate * seconds)) / rate)


def dominant_frequency(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples.astype(np.float64)))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


@pytest.mark.parametrize(("rate", "width", "channels"),
                         [(8000, 2, 1), (16000, 2, 1), (44100, 2, 2), (48000, 1, 1)])
def test_any_wav_becomes_8k_mono_with_the_same_pitch(tmp_path: Path, rate: int, width: int,
                                                     channels: int) -> None:
    path = write_wav(tmp_path / "t.wav", tone(440, rate), rate, width, channels)
    samples = load_wav(path, 8000)
    assert abs(len(samples) - 8000) <= 1
    assert abs(dominant_frequency(samples, 8000) - 440) < 3


def test_resampling_filters_what_8k_cannot_carry(tmp_path: Path) -> None:
    # 6 kHz would alias to 2 kHz at 8 kHz without the low-pass filter.
    path = write_wav(tmp_path / "hi.wav", tone(6000, 48000), 48000)
    samples = load_wav(path, 8000).astype(np.float64)
    assert np.sqrt(np.mean(samples**2)) < 0.01 * 32767 * 0.5


def test_unusable_files_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "hold.wav"
    with pytest.raises(AudioFileError, match=r"hold\.wav"):
        load_wav(missing)
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not a wav at all")
    with pytest.raises(AudioFileError, match=r"junk\.wav"):
        load_wav(junk)
    empty = write_wav(tmp_path / "empty.wav", np.zeros(0), 8000)
    with pytest.raises(AudioFileError, match=r"empty\.wav"):
        load_wav(empty)


def test_player_frames_loop_and_one_shot_ends_in_silence() -> None:
    samples = np.arange(1, 401, dtype=np.int16)  # 2.5 frames at 8 kHz
    looped = Player(samples, loop=True)
    frames = [looped.next_frame() for _ in range(5)]
    assert all(len(frame) == 160 for frame in frames)
    joined = np.concatenate(frames)
    assert list(joined[:400]) == list(samples) and list(joined[400:800]) == list(samples)
    once = Player(samples)
    tail = [once.next_frame() for _ in range(4)]
    assert once.finished and not tail[3].any() and list(tail[2][:80]) == list(samples[320:])


def test_ringback_cadences() -> None:
    us = ringback(8000, "us")
    assert len(us) == 6 * 8000 and not us[2 * 8000 :].any()
    assert abs(dominant_frequency(us[:16000], 8000) - 460) < 25  # 440 + 480 Hz
    uk = ringback(8000, "uk")
    assert len(uk) == int((0.4 + 0.2 + 0.4 + 2.0) * 8000)
    with pytest.raises(ValueError, match=r"media\.ringback"):
        ringback(8000, "mars")


def test_a_bot_sending_far_ahead_of_real_time_is_dropped_not_buffered() -> None:
    from warmline.agents.media_stream import StreamPlayer, _Misbehaving

    player = StreamPlayer(max_seconds=2.0)
    second = np.zeros(8000, dtype=np.int16)
    player.push(second)
    player.push(second)  # two seconds queued: the cap, still fine
    with pytest.raises(_Misbehaving, match="ws_audio_seconds"):
        player.push(second[:160])
    for _ in range(50):
        player.next_frame()  # one second played: room again
    player.push(second)
    assert player.queued == 16000  # two seconds again
