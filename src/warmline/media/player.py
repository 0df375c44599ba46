"""Audio sources that fill every wait: WAV prompts and hold music, and ringback tones.

A source yields 20 ms frames of 16-bit linear audio at the leg's rate; the
relay encodes them. WAV files of any rate, width and channel count are read
once at start (a missing or unreadable file is a config error naming it),
mixed to mono and resampled with a windowed-sinc low-pass so that 44.1 or
48 kHz music does not alias into the narrowband call.
"""

from __future__ import annotations

import io
import wave
from pathlib import Path

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.int16]
FRAME_MS = 20


class AudioFileError(ValueError):
    """An audio file that cannot be used; the message names the file."""


def load_wav(path: str | Path | io.BytesIO, rate: int = 8000, name: str | None = None
             ) -> Samples:
    """The whole file (or in-memory WAV) as mono int16 at ``rate``."""
    path = path if isinstance(path, io.BytesIO) else Path(path)
    label = Path(name) if name else (path if isinstance(path, Path) else Path("<wav>"))
    try:
        with wave.open(path if isinstance(path, io.BytesIO) else str(path), "rb") as reader:
            width, channels, source_rate = (reader.getsampwidth(), reader.getnchannels(),
                                            reader.getframerate())
            raw = reader.readframes(reader.getnframes())
    except FileNotFoundError:
        raise AudioFileError(f"audio file not found: {label}") from None
    except (wave.Error, EOFError, OSError) as error:
        raise AudioFileError(f"audio file {label} is not a readable WAV: {error}") from None
    samples = _to_float(raw, width, label)
    if channels > 1:
        samples = samples[: len(samples) // channels * channels].reshape(-1, channels).mean(1)
    if len(samples) == 0:
        raise AudioFileError(f"audio file {label} holds no audio")
    resampled = resample(samples, source_rate, rate)
    return np.clip(np.round(resampled * 32767), -32768, 32767).astype(np.int16)


def _to_float(raw: bytes, width: int, path: Path) -> npt.NDArray[np.float64]:
    if width == 1:
        return (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128) / 128
    if width == 2:
        return np.frombuffer(raw, dtype="<i2").astype(np.float64) / 32768
    if width == 3:
        padded = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        as_int = (padded[:, 0].astype(np.int32) | padded[:, 1].astype(np.int32) << 8
                  | padded[:, 2].astype(np.int32) << 16)
        return np.where(as_int >= 1 << 23, as_int - (1 << 24), as_int) / float(1 << 23)
    if width == 4:
        return np.frombuffer(raw, dtype="<i4").astype(np.float64) / 2**31
    raise AudioFileError(f"audio file {path}: {8 * width}-bit samples are not supported")


def resample(samples: npt.NDArray[np.float64], source: int, target: int
             ) -> npt.NDArray[np.float64]:
    """Band-limited resampling: low-pass below the lower Nyquist, then interpolate."""
    if source == target:
        return samples
    if target < source:
        samples = _low_pass(samples, cutoff=0.45 * target / source)
    positions = np.arange(0, len(samples) * target / source) * source / target
    return np.interp(positions, np.arange(len(samples)), samples)


def _low_pass(samples: npt.NDArray[np.float64], cutoff: float, taps: int = 63
              ) -> npt.NDArray[np.float64]:
    """A Hamming-windowed sinc FIR; ``cutoff`` as a fraction of the sample rate."""
    n = np.arange(taps) - (taps - 1) / 2
    kernel = 2 * cutoff * np.sinc(2 * cutoff * n) * np.hamming(taps)
    return np.convolve(samples, kernel / kernel.sum(), mode="same")


def save_wav(path: Path, frames: list[Samples], rate: int = 8000) -> float:
    """Write 16-bit mono ``frames`` (a recording) to ``path``; returns the seconds written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = np.concatenate(frames) if frames else np.zeros(0, dtype=np.int16)
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(audio.astype("<i2").tobytes())
    return len(audio) / rate


class Player:
    """Frames from a buffer, once or looped; silence after the end of a one-shot."""

    def __init__(self, samples: Samples, rate: int = 8000, loop: bool = False) -> None:
        self.frame = rate * FRAME_MS // 1000
        self.samples = samples
        self.loop = loop
        self.position = 0

    @property
    def finished(self) -> bool:
        return not self.loop and self.position >= len(self.samples)

    def next_frame(self) -> Samples:
        frame = self.samples[self.position : self.position + self.frame]
        self.position += self.frame
        if len(frame) < self.frame:
            if self.loop and len(self.samples):
                self.position = self.frame - len(frame)
                frame = np.concatenate([frame, self.samples[: self.position]])
            else:
                frame = np.concatenate([frame, np.zeros(self.frame - len(frame), np.int16)])
        return frame


def whole_frames(samples: Samples, rate: int = 8000) -> Samples:
    """``samples`` padded with silence to whole 20 ms frames (under 20 ms of it): a loop of
    whole frames is one the relay's compiled fast path can play off the event loop."""
    frame = rate * FRAME_MS // 1000
    short = -len(samples) % frame
    return np.concatenate([samples, np.zeros(short, np.int16)]) if short else samples


def ringback(rate: int = 8000, country: str = "us") -> Samples:
    """One cadence of a ringback tone, to loop while the human's phone rings."""
    tones = {"us": ((440, 480), 2.0, 4.0), "uk": ((400, 450), 0.4, 0.2),
             "eu": ((425,), 1.0, 4.0)}
    try:
        frequencies, on, off = tones[country]
    except KeyError:
        raise ValueError(f"media.ringback: unknown country {country!r} ({', '.join(tones)})"
                         ) from None
    t = np.arange(int(on * rate)) / rate
    tone = sum(np.sin(2 * np.pi * f * t) for f in frequencies) / len(frequencies)
    burst = np.round(tone * 0.25 * 32767).astype(np.int16)  # about -15 dBFS
    cadence = np.concatenate([burst, np.zeros(int(off * rate), np.int16)])
    if country == "uk":  # double ring: on, off, on, then 2 s silence
        cadence = np.concatenate([burst, np.zeros(int(off * rate), np.int16), burst,
                                  np.zeros(int(2.0 * rate), np.int16)])
    return cadence
