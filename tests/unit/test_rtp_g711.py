"""RTP packets, seamless stream rewriting, and G.711 tables against the standard's values."""

from __future__ import annotations

import contextlib
from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from warmline.media import g711
from warmline.media.dtmf import DtmfError, TelephoneEvent
from warmline.media.rtp import ContinuousStream, RtpError, RtpPacket

ALL_CODES = bytes(range(256))


def test_g711_known_values() -> None:
    assert g711.ulaw_encode(np.array([0], dtype=np.int16)) == b"\xff"
    assert g711.alaw_encode(np.array([0], dtype=np.int16)) == b"\xd5"
    assert list(g711.ulaw_decode(b"\xff\x7f\x80\x00")) == [0, 0, 32124, -32124]
    assert list(g711.alaw_decode(b"\xd5\x55\xaa\x2a")) == [8, -8, 32256, -32256]
    extremes = np.array([32767, -32768], dtype=np.int16)
    assert g711.ulaw_encode(extremes) == b"\x80\x00"  # clipped to the largest codes
    assert g711.alaw_encode(extremes) == b"\xaa\x2a"


@pytest.mark.parametrize(("decode", "encode"), [(g711.ulaw_decode, g711.ulaw_encode),
                                                  (g711.alaw_decode, g711.alaw_encode)])
def test_every_code_survives_decode_then_encode(decode: object, encode: object) -> None:
    linear = decode(ALL_CODES)
    again = decode(encode(linear))
    assert np.array_equal(linear, again)
    positive = np.sort(linear[linear > 0])
    assert len(np.unique(positive)) == len(positive)  # one value per positive code


def test_quantisation_error_stays_within_half_a_step() -> None:
    ramp = np.arange(-32000, 32000, 7, dtype=np.int16)
    for decode, encode in ((g711.ulaw_decode, g711.ulaw_encode),
                           (g711.alaw_decode, g711.alaw_encode)):
        error = np.abs(decode(encode(ramp)).astype(np.int32) - ramp)
        relative = error / np.maximum(np.abs(ramp.astype(np.int32)), 256)
        assert relative.max() < 0.07  # G.711's segments keep error near 1/32 of the level


def test_direct_pcmu_pcma_translation_matches_going_through_linear() -> None:
    via_linear = g711.alaw_encode(g711.ulaw_decode(ALL_CODES))
    assert g711.ulaw_to_alaw(ALL_CODES) == via_linear
    back = g711.alaw_to_ulaw(g711.ulaw_to_alaw(ALL_CODES))
    error = np.abs(g711.ulaw_decode(back).astype(np.int32) - g711.ulaw_decode(ALL_CODES))
    assert error.max() <= 1024  # two quantisations at the loudest segment


def test_rtp_round_trip_with_csrc_extension_and_padding() -> None:
    packet = RtpPacket(0, 65535, 4294967000, 0xCA110000, b"\xff" * 160, marker=True,
                       csrcs=(1, 2), extension=(0xBEDE, b"\x10\x01\x00\x00"))
    data = packet.to_bytes()
    assert RtpPacket.parse(data) == packet
    padded = bytearray(data)
    padded[0] |= 0x20
    padded += b"\x00\x00\x03"
    assert RtpPacket.parse(bytes(padded)).payload == packet.payload


@pytest.mark.parametrize("data", [
    b"\x80\x00",  # truncated
    b"\x40" + bytes(11),  # version 1
    b"\x8f" + bytes(11),  # 15 CSRCs announced, none present
    b"\x90" + bytes(11),  # extension flag without extension
    b"\xa0" + bytes(11) + b"\x00",  # padding length 0
    b"\x80\xc8" + bytes(10),  # RTCP sender report on the RTP path
    b"\x80\x00" + bytes(1600),  # oversized
])
def test_malformed_rtp_is_refused(data: bytes) -> None:
    with pytest.raises(RtpError):
        RtpPacket.parse(data)


def frames(ssrc: int, first_seq: int, first_ts: int, count: int) -> list[RtpPacket]:
    return [RtpPacket(0, (first_seq + n) & 0xFFFF, first_ts + 160 * n, ssrc, b"\xff" * 160)
            for n in range(count)]


def test_stream_stays_continuous_across_source_switches() -> None:
    stream = ContinuousStream(ssrc=0x1234, clock_rate=8000, first_sequence=100,
                              first_timestamp=5000)
    sent = []
    now = 0.0
    for source in (frames(0xA1, 40000, 9_000_000, 50), frames(0xB2, 65530, 17, 50),
                   frames(0xC3, 7, 4_294_967_000, 50)):
        for packet in source:
            sent.append(stream.rewrite(packet, now))
            now += 0.020
        now += 0.040  # the next source starts two frame times later
    assert {p.ssrc for p in sent} == {0x1234}
    assert [p.sequence for p in sent] == [(100 + n) & 0xFFFF for n in range(150)]
    steps = [(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in pairwise(sent)]
    assert set(steps[:49] + steps[50:99] + steps[100:]) == {160}
    assert steps[49] == steps[99] == 480  # 20 ms frame + 40 ms of real gap, not a jump
    assert [n for n, p in enumerate(sent) if p.marker] == [0, 50, 100]
    assert sent[0].timestamp == 5000 and stream.switches == 2


@given(st.binary(max_size=200))
def test_rtp_parser_raises_only_its_own_error(data: bytes) -> None:
    with contextlib.suppress(RtpError):
        packet = RtpPacket.parse(b"\x80" + data[1:] if data else data)
        assert packet.to_bytes()  # whatever parses can be written back


@given(st.binary(max_size=8))
def test_telephone_event_parser_raises_only_its_own_error(data: bytes) -> None:
    with contextlib.suppress(DtmfError):
        TelephoneEvent.parse(data)


def test_g722_round_trip_keeps_the_tone() -> None:
    from warmline.media.codecs import make_codec

    rate = 8000
    tone = (np.sin(2 * np.pi * 440 * np.arange(rate) / rate) * 8000).astype(np.int16)
    encoder, decoder = make_codec("g722"), make_codec("g722")
    out = np.concatenate([decoder.decode(encoder.encode(tone[i:i + 160]))
                          for i in range(0, rate, 160)])
    assert len(out) == rate
    spectrum = np.abs(np.fft.rfft(out[800:].astype(np.float64)))
    peak = np.fft.rfftfreq(len(out) - 800, 1 / rate)[np.argmax(spectrum)]
    assert abs(peak - 440) < 5
    level = np.sqrt(np.mean(out[800:].astype(np.float64) ** 2))
    assert 0.7 * 8000 / np.sqrt(2) < level < 1.3 * 8000 / np.sqrt(2)
    with pytest.raises(ValueError, match="speex"):
        make_codec("speex")


def test_opus_round_trip_keeps_the_tone() -> None:
    from warmline.media.codecs import make_codec

    tone = (np.sin(2 * np.pi * 440 * np.arange(8000) / 8000) * 8000).astype(np.int16)
    encoder, decoder = make_codec("opus"), make_codec("opus")
    out = np.concatenate([decoder.decode(encoder.encode(tone[i:i + 160]))
                          for i in range(0, 8000, 160)])
    assert len(out) == 8000
    spectrum = np.abs(np.fft.rfft(out[1600:].astype(np.float64)))
    assert abs(np.fft.rfftfreq(len(out) - 1600, 1 / 8000)[np.argmax(spectrum)] - 440) < 5


def test_a_narrowband_source_is_rescaled_into_a_48k_stream() -> None:
    stream = ContinuousStream(ssrc=1, clock_rate=48000, first_timestamp=0)
    out = [stream.rewrite(p, n * 0.02, source_rate=8000)
           for n, p in enumerate(frames(0xA1, 10, 4_294_967_000, 5))]
    steps = [(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in pairwise(out)]
    assert steps == [960] * 4  # across the source's own timestamp wrap, too
