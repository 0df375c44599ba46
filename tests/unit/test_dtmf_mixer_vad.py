"""DTMF events, the 3-way mix-minus arithmetic and first-word detection."""

from __future__ import annotations

import numpy as np
import pytest

from tests.audio_samples import voiced
from warmline.media.dtmf import (
    DtmfError,
    DtmfReceiver,
    TelephoneEvent,
    digit_packets,
    parse_dtmf_relay,
)
from warmline.media.mixer import mix_minus
from warmline.media.vad import FirstWordDetector


def test_rfc4733_packet_layout() -> None:
    assert TelephoneEvent(11, True, 10, 800).to_bytes() == bytes([11, 0x8A, 0x03, 0x20])
    event = TelephoneEvent.parse(bytes([0, 0x0A, 0x00, 0xA0]))
    assert (event.digit, event.end, event.volume, event.duration) == ("0", False, 10, 160)


def test_a_digit_is_updates_then_three_ends_with_one_marker() -> None:
    packets = digit_packets("#", duration_ms=100)
    events = [TelephoneEvent.parse(payload) for _, payload in packets]
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert [marker for marker, _ in packets] == [True] + [False] * 6
    assert {e.digit for e in events} == {"#"}


def test_receiver_reports_each_digit_once() -> None:
    receiver = DtmfReceiver()
    seen = []
    for timestamp, digit in ((1000, "0"), (5000, "0"), (9000, "5")):
        for _, payload in digit_packets(digit):
            found = receiver.feed(timestamp, payload)
            if found:
                seen.append(found)
        assert receiver.feed(timestamp, digit_packets(digit)[-1][1]) is None  # late end copy
    assert seen == ["0", "0", "5"]


@pytest.mark.parametrize("payload", [b"\x00\x0a", bytes([16, 0, 0, 0]), b""])
def test_bad_telephone_events_are_refused(payload: bytes) -> None:
    with pytest.raises(DtmfError):
        DtmfReceiver().feed(0, payload)


def test_sip_info_dtmf_relay() -> None:
    assert parse_dtmf_relay(b"Signal=0\r\nDuration=160\r\n") == "0"
    assert parse_dtmf_relay(b"signal= *\r\n") == "*"
    for body in (b"Duration=160\r\n", b"Signal=12\r\n", b"\xff"):
        with pytest.raises(DtmfError):
            parse_dtmf_relay(body)


def test_mix_minus_each_hears_the_others_and_clips() -> None:
    a = np.array([1000, 30000, -30000], dtype=np.int16)
    b = np.array([2000, 10000, -10000], dtype=np.int16)
    c = np.array([4000, 0, 0], dtype=np.int16)
    to_a, to_b, to_c = mix_minus([a, b, c])
    assert list(to_a) == [6000, 10000, -10000]
    assert list(to_b) == [5000, 30000, -30000]
    assert list(to_c) == [3000, 32767, -32768]  # 40000 and -40000 clip, not wrap
    assert list(mix_minus([a])[0]) == [0, 0, 0]
    with pytest.raises(ValueError):
        mix_minus([a, a[:2]])


def test_first_word_is_timestamped_at_its_onset_and_noise_does_not_count() -> None:
    rng = np.random.default_rng(7)
    noise = rng.normal(0, 40, 8000 * 2).astype(np.int16)
    signal = np.concatenate([noise, voiced(1.0)])
    detector = FirstWordDetector(8000)
    found = []
    for index in range(0, len(signal) - 160 + 1, 160):
        at = detector.feed(signal[index:index + 160].tobytes(), index / 8000)
        if at is not None:
            found.append(at)
    assert len(found) == 1
    assert 1.98 <= found[0] <= 2.06  # speech starts at 2.00 s


def test_vad_rejects_unsupported_rates() -> None:
    with pytest.raises(ValueError, match="sample rate"):
        FirstWordDetector(11025)
