"""The fast path's G.722 (media/g722_adpcm.h) against the `G722` package: the same bytes.

It needs the compiled extension, so it lives beside tests/interop/test_fastpath.py and runs
in the stage that tests the build as shipped (scripts/test), not in the pure-Python one.
"""

from __future__ import annotations

import numpy as np
import pytest
from G722 import G722

from warmline.media import _fastpath  # type: ignore[attr-defined]
from warmline.media.codecs import _G722Package, make_codec

RATE = 8000
FRAME = 160  # 20 ms


def speech_like(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """A voiced sound: harmonics of a wandering pitch, syllables four times a second."""
    t = np.arange(int(RATE * seconds)) / RATE
    pitch = 120 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 25))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t), 0, None) ** 2
    return np.clip(9000 * voice * envelope + rng.normal(0, 200, t.size), -32768, 32767)


def g722_signals() -> dict[str, np.ndarray]:
    """Two seconds (100 frames) of each: what a call carries and what stresses a codec."""
    rng = np.random.default_rng(722)
    t = np.arange(2 * RATE) / RATE
    signals = {
        "silence": np.zeros(t.size),
        "tone": 8000 * np.sin(2 * np.pi * 440 * t),
        "two tones": 6000 * np.sin(2 * np.pi * 697 * t) + 6000 * np.sin(2 * np.pi * 1209 * t),
        "sweep": 12000 * np.sin(2 * np.pi * (50 * t + 975 * t * t)),  # 50 Hz to 3950 Hz
        "speech-like": speech_like(2, rng),
        "noise": rng.normal(0, 3000, t.size),
        "full-scale noise": rng.integers(-32768, 32768, t.size),
        "full-scale square": np.where(np.sin(2 * np.pi * 200 * t) >= 0, 32767, -32768),
        "full-scale tone": 32767 * np.sin(2 * np.pi * 3000 * t),
        "quiet": rng.integers(-3, 4, t.size),
    }
    return {name: np.clip(audio, -32768, 32767).astype(np.int16)
            for name, audio in signals.items()}


G722_SIGNALS = g722_signals()


def test_the_python_path_codes_g722_with_the_fast_paths_codec() -> None:
    """The extension is built (scripts/build-core, CI): codecs.py uses its G.722."""
    assert "g722" in _fastpath.TRANSCODES
    assert not isinstance(make_codec("g722"), _G722Package)


@pytest.mark.parametrize("name", list(G722_SIGNALS))
def test_compiled_g722_encodes_the_packages_bytes(name: str) -> None:
    """20 ms frames one after another, the ADPCM state carried between them."""
    package, compiled, codec = G722(8000, 64000), _fastpath.G722Codec(), make_codec("g722")
    for frame in G722_SIGNALS[name].reshape(-1, FRAME):
        expected = bytes(package.encode(frame))
        assert len(expected) == FRAME  # an octet a sample at the 8 kHz interface
        assert compiled.encode(frame) == expected
        assert codec.encode(frame) == expected


@pytest.mark.parametrize("name", list(G722_SIGNALS))
def test_compiled_g722_decodes_as_the_package(name: str) -> None:
    """The package's own payloads, frame by frame, into the same samples."""
    payload = bytes(G722(8000, 64000).encode(G722_SIGNALS[name]))
    package, compiled, codec = G722(8000, 64000), _fastpath.G722Codec(), make_codec("g722")
    for start in range(0, len(payload), FRAME):
        frame = payload[start:start + FRAME]
        expected = np.asarray(package.decode(frame), dtype=np.int16)
        assert np.array_equal(np.frombuffer(compiled.decode(frame), np.int16), expected)
        assert np.array_equal(codec.decode(frame), expected)


def test_compiled_g722_decodes_any_octets_as_the_package() -> None:
    """Arbitrary payloads (every octet value, random ones, in frames of odd lengths): a far
    end's encoder is not ours, and a damaged packet is still decoded the same way."""
    rng = np.random.default_rng(9)
    payload = bytes(range(256)) * 4 + rng.integers(0, 256, 40_000, dtype=np.uint8).tobytes()
    package, compiled = G722(8000, 64000), _fastpath.G722Codec()
    start = 0
    for length in [1, 7, 80, 159, 160, 161, 320, 480] * 100:
        frame = payload[start:start + length]
        start += length
        expected = np.asarray(package.decode(frame), dtype=np.int16)
        assert np.array_equal(np.frombuffer(compiled.decode(frame), np.int16), expected)
    assert start > len(payload) - 480  # it went through the whole payload


def test_compiled_g722_frames_of_any_length_carry_the_state() -> None:
    """Frames of 1 to 480 samples encode as one stream, as the package's do."""
    audio = np.concatenate([G722_SIGNALS["speech-like"], G722_SIGNALS["sweep"]])
    package, compiled = G722(8000, 64000), _fastpath.G722Codec()
    start = 0
    for length in [1, 3, 80, 160, 241, 320, 480] * 20:
        frame = audio[start:start + length]
        start += length
        assert compiled.encode(frame) == bytes(package.encode(frame))
    assert compiled.encode(np.zeros(0, np.int16)) == b""
    with pytest.raises(ValueError, match="16-bit"):
        compiled.encode(b"\x00\x01\x02")  # not whole samples
