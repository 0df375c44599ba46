"""RTCP reports and the RFC 3550 Appendix A statistics."""

from __future__ import annotations

import struct

import pytest

from warmline.media.rtcp import (
    RR,
    SR,
    ReceptionStats,
    ReportBlock,
    RtcpError,
    parse_compound,
    receiver_report,
    sender_report,
)


def feed(stats: ReceptionStats, sequences: list[int], jitter_s: float = 0.0) -> None:
    for n, sequence in enumerate(sequences):
        offset = jitter_s if n % 2 else -jitter_s
        stats.update(sequence & 0xFFFF, 160 * n, n * 0.020 + offset)


def test_clean_stream_has_no_loss_and_no_jitter() -> None:
    stats = ReceptionStats(8000)
    feed(stats, list(range(1000, 1050)))
    block = stats.report(0x1234)
    assert (block.fraction_lost, block.cumulative_lost, block.jitter) == (0, 0, 0)
    assert block.highest_sequence == 1049


def test_loss_counts_cumulative_and_per_interval() -> None:
    stats = ReceptionStats(8000)
    sequences = [s for s in range(20) if s not in (5, 6)]
    for sequence in sequences:
        stats.update(sequence, 160 * sequence, sequence * 0.02)
    first = stats.report(1)
    assert first.cumulative_lost == 2 and first.fraction_lost == (2 << 8) // 20
    for sequence in range(20, 30):
        stats.update(sequence, 160 * sequence, sequence * 0.02)
    second = stats.report(1)
    assert second.cumulative_lost == 2 and second.fraction_lost == 0  # a new interval


def test_sequence_wrap_extends_the_highest_number() -> None:
    stats = ReceptionStats(8000)
    feed(stats, list(range(65530, 65536 + 6)))
    assert stats.extended_highest == 65536 + 5 and stats.expected == 12 and stats.lost == 0


def test_jitter_follows_rfc3550_a8() -> None:
    stats = ReceptionStats(8000)
    feed(stats, list(range(300)), jitter_s=0.005)  # +-5 ms: transit swings by 80 units
    assert 70 < stats.jitter <= 80


def test_sender_report_round_trip_with_blocks() -> None:
    blocks = [ReportBlock(0xA, 25, 2, 70000, 12, 0x11112222, 65536),
              ReportBlock(0xB, 0, -3, 5, 0)]
    sr = sender_report(0x99, 1_700_000_000.5, 123456, 500, 80000, blocks)
    rr = receiver_report(0x98, blocks[:1])
    reports = parse_compound(sr + rr)
    assert [r.kind for r in reports] == [SR, RR]
    assert reports[0].ssrc == 0x99 and list(reports[0].blocks) == blocks
    assert reports[0].ntp == (1_700_000_000 + 2_208_988_800, 2**31)
    assert reports[1].blocks == (blocks[0],)


def test_other_rtcp_types_are_skipped_and_garbage_refused() -> None:
    sdes = struct.pack("!BBH", 0x81, 202, 2) + struct.pack("!I", 7) + b"\x01\x00\x00\x00"
    assert parse_compound(receiver_report(1, []) + sdes)[0].kind == RR
    for bad in (b"\x80\xc9", b"\x40\xc9\x00\x01\x00\x00\x00\x01",
                struct.pack("!BBH", 0x82, RR, 1) + b"\x00\x00\x00\x01"):
        with pytest.raises(RtcpError):
            parse_compound(bad)


class _Leg:
    """A leg that owns its RTCP session, as RelayLeg does (the session holds it back)."""

    def __init__(self) -> None:
        from warmline.media.rtcp_session import RtcpSession

        self.rtcp = RtcpSession(self, self.send)  # type: ignore[arg-type]

    def send(self, data: bytes, destination: tuple[str, int]) -> None:
        raise AssertionError("a released session sends nothing")


def test_a_released_rtcp_session_lets_its_leg_be_freed_without_a_garbage_collection() -> None:
    import gc
    import weakref

    gc.disable()  # only reference counting may free it
    try:
        kept, released = _Leg(), _Leg()
        released.rtcp.release()
        released.rtcp.release()  # a leg two calls shared is released by both
        kept_ref, released_ref = weakref.ref(kept), weakref.ref(released)
        del kept, released
        assert released_ref() is None  # no cycle left: freed at once
        assert kept_ref() is not None  # leg <-> session: waits for a collection
    finally:
        gc.enable()
        gc.collect()
