"""RTCP sender and receiver reports (RFC 3550 §6.4) and the statistics behind them.

Per incoming stream, :class:`ReceptionStats` keeps the RFC 3550 Appendix A
counters: extended highest sequence (with wrap), expected vs received for
cumulative and interval loss, and interarrival jitter (A.8) in timestamp
units. They go into report blocks and, per leg, into the call's records.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

SR, RR = 200, 201
_NTP_EPOCH_OFFSET = 2_208_988_800


class RtcpError(ValueError):
    """A compound RTCP packet that cannot be read (dropped and counted)."""


@dataclass(frozen=True, slots=True)
class ReportBlock:
    ssrc: int
    fraction_lost: int  # 0-255, fraction of the last interval's packets lost * 256
    cumulative_lost: int  # may be negative with duplicates (24-bit signed)
    highest_sequence: int  # extended: cycles << 16 | max sequence
    jitter: int  # timestamp units
    last_sr: int = 0
    delay_since_last_sr: int = 0

    def to_bytes(self) -> bytes:
        lost = self.cumulative_lost & 0xFFFFFF
        return struct.pack("!IIIIII", self.ssrc, (self.fraction_lost & 0xFF) << 24 | lost,
                           self.highest_sequence & 0xFFFFFFFF, self.jitter & 0xFFFFFFFF,
                           self.last_sr, self.delay_since_last_sr)

    @classmethod
    def parse(cls, data: bytes, offset: int) -> ReportBlock:
        ssrc, loss, highest, jitter, lsr, dlsr = struct.unpack_from("!IIIIII", data, offset)
        lost = loss & 0xFFFFFF
        if lost & 0x800000:
            lost -= 1 << 24
        return cls(ssrc, loss >> 24, lost, highest, jitter, lsr, dlsr)


ReceptionState = tuple[bool, int, int, int, int, bool, float, float, int, int]


class ReceptionStats:
    """RFC 3550 A.1/A.3/A.8 for one source, fed with every packet received."""

    def __init__(self, clock_rate: int) -> None:
        self.clock_rate = clock_rate
        self.received = 0
        self._base: int | None = None
        self._max = 0
        self._cycles = 0
        self._transit: float | None = None
        self._jitter = 0.0
        self._expected_prior = 0
        self._received_prior = 0

    def update(self, sequence: int, rtp_timestamp: int, arrival: float) -> None:
        """``arrival`` in seconds on the receiver's clock."""
        if self._base is None:
            self._base = self._max = sequence
        elif sequence < self._max and self._max - sequence > 0x8000:
            self._cycles += 1 << 16  # wrapped forward
            self._max = sequence
        elif sequence > self._max and sequence - self._max < 0x8000:
            self._max = sequence
        self.received += 1
        transit = arrival * self.clock_rate - rtp_timestamp
        if self._transit is not None:
            self._jitter += (abs(transit - self._transit) - self._jitter) / 16
        self._transit = transit

    def export_state(self) -> ReceptionState:
        """The counters, to be kept up elsewhere (the compiled fast path)."""
        return (self._base is not None, self._base or 0, self._max, self._cycles, self.received,
                self._transit is not None, self._transit or 0.0, self._jitter,
                self._expected_prior, self._received_prior)

    def restore_state(self, state: ReceptionState) -> None:
        """Take the counters back; the report interval stays ours (only :meth:`report` moves it)."""
        (has_base, base, self._max, self._cycles, self.received, has_transit, transit,
         self._jitter, _, _) = state
        self._base = base if has_base else None
        self._transit = transit if has_transit else None

    @property
    def extended_highest(self) -> int:
        return self._cycles + self._max

    @property
    def expected(self) -> int:
        return 0 if self._base is None else self.extended_highest - self._base + 1

    @property
    def lost(self) -> int:
        return self.expected - self.received

    @property
    def jitter(self) -> int:
        return int(self._jitter)

    def report(self, ssrc: int) -> ReportBlock:
        """A report block; starts a new interval for the fraction lost."""
        expected_interval = self.expected - self._expected_prior
        received_interval = self.received - self._received_prior
        self._expected_prior, self._received_prior = self.expected, self.received
        lost_interval = expected_interval - received_interval
        fraction = 0 if expected_interval <= 0 or lost_interval <= 0 else \
            (lost_interval << 8) // expected_interval
        return ReportBlock(ssrc, min(fraction, 255), max(min(self.lost, 0x7FFFFF), -0x800000),
                           self.extended_highest, self.jitter)


def sender_report(ssrc: int, wallclock: float, rtp_timestamp: int, packets: int,
                  octets: int, blocks: list[ReportBlock]) -> bytes:
    """An SR (``wallclock`` in Unix seconds), with up to 31 report blocks."""
    seconds = int(wallclock) + _NTP_EPOCH_OFFSET
    fraction = int((wallclock % 1) * 2**32)
    body = struct.pack("!IIIIII", ssrc, seconds & 0xFFFFFFFF, fraction, rtp_timestamp & 0xFFFFFFFF,
                       packets & 0xFFFFFFFF, octets & 0xFFFFFFFF)
    return _packet(SR, blocks, body)


def receiver_report(ssrc: int, blocks: list[ReportBlock]) -> bytes:
    return _packet(RR, blocks, struct.pack("!I", ssrc))


def _packet(kind: int, blocks: list[ReportBlock], body: bytes) -> bytes:
    if len(blocks) > 31:
        raise ValueError("at most 31 report blocks per RTCP packet")
    payload = body + b"".join(block.to_bytes() for block in blocks)
    return struct.pack("!BBH", 0x80 | len(blocks), kind, len(payload) // 4) + payload


@dataclass(frozen=True, slots=True)
class Report:
    kind: int  # SR or RR
    ssrc: int
    blocks: tuple[ReportBlock, ...]
    ntp: tuple[int, int] | None = None  # an SR's NTP timestamp (seconds, fraction)


def parse_compound(data: bytes) -> list[Report]:
    """The SR/RR packets of a compound RTCP packet; other types (SDES, BYE) are skipped."""
    reports: list[Report] = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 4:
            raise RtcpError("truncated RTCP header")
        first, kind, words = struct.unpack_from("!BBH", data, offset)
        end = offset + 4 + 4 * words
        if first >> 6 != 2 or end > len(data):
            raise RtcpError("bad RTCP version or length")
        count = first & 0x1F
        if kind in (SR, RR):
            reports.append(_parse_report(data, offset + 4, end, kind, count))
        offset = end
    return reports


def _parse_report(data: bytes, start: int, end: int, kind: int, count: int) -> Report:
    info = 24 if kind == SR else 4
    if start + info + 24 * count > end:
        raise RtcpError("report blocks run past the RTCP packet")
    ssrc = struct.unpack_from("!I", data, start)[0]
    ntp = struct.unpack_from("!II", data, start + 4) if kind == SR else None
    blocks = tuple(ReportBlock.parse(data, start + info + 24 * n) for n in range(count))
    return Report(kind, ssrc, blocks, ntp)
