"""The codecs' edges the relay meets: Opus frame lengths, payloads that are not audio, G.722
input wider than 16 bits. The fast path's G.722 against the `G722` package needs the
compiled extension: tests/interop/test_fastpath_g722.py (the pure-Python stage has none)."""

from __future__ import annotations

import numpy as np
import opuslib
import pytest

from warmline.media.codecs import CodecError, make_codec


@pytest.mark.parametrize(("samples", "sent"), [(160, 160), (320, 320), (80, 80), (240, 160),
                                               (100, 160)])
def test_opus_keeps_a_frame_it_can_frame_and_cuts_or_pads_the_rest_to_20_ms(
        samples: int, sent: int) -> None:
    """A 40 ms G.711 packet becomes a 40 ms Opus packet (the fast path does the same), not
    20 ms of it; 30 ms, which Opus cannot frame, is cut to 20."""
    tone = (6000 * np.sin(np.arange(samples) * 2 * np.pi * 440 / 8000)).astype(np.int16)
    packet = make_codec("opus").encode(tone)
    decoder = opuslib.Decoder(48000, 1)
    assert len(decoder.decode(packet, 5760)) // 2 == sent * 6  # samples at 48 kHz


@pytest.mark.parametrize("payload", [b"", b"\x03\x00", b"\xff\xff\xff"])
def test_an_opus_payload_that_is_not_audio_is_a_codec_error(payload: bytes) -> None:
    with pytest.raises(CodecError):
        make_codec("opus").decode(payload)


def test_g722_samples_wider_than_16_bits_are_clipped_not_wrapped() -> None:
    """Whichever G.722 runs (the fast path's, or the `G722` package without it)."""
    wide = np.array([40000, -40000, 1000] * 160, dtype=np.int32)
    clipped = np.array([32767, -32768, 1000] * 160, dtype=np.int16)
    assert make_codec("g722").encode(wide) == make_codec("g722").encode(clipped)


def test_turning_the_fast_path_off_turns_its_g722_off_too(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from warmline.media import codecs

    monkeypatch.setenv("WARMLINE_FASTPATH", "0")
    assert codecs._compiled_g722() is None
