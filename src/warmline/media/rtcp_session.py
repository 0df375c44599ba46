"""RTCP for one leg (RFC 3550 §6): our reports out, the far end's reports in.

Every interval (5 s by default, randomised to 0.5-1.5x so that legs do not
report in lock-step, §6.2) a leg sends a sender report if it sent audio since
the last one, else a receiver report, with one report block on what it
received (loss, jitter, extended highest sequence, and LSR/DLSR so the far
end can compute round-trip time). What the far end reports about our stream
is kept (``far_end``) for the call's records: the loss and jitter the caller
actually experienced. RTCP goes to the RTP port under rtcp-mux (RFC 5761),
else to port+1 or the a=rtcp port (RFC 3605), and answers where it comes from
(symmetric RTCP). Unreadable RTCP is counted and dropped.

What a session needs of its leg is :class:`ReportedLeg`, declared here, so
this module does not import relay_leg.py, which imports it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
import weakref
from collections.abc import Callable
from typing import Protocol, cast

from warmline.media.plane import LegCounters
from warmline.media.rtcp import (
    SR,
    ReceptionStats,
    ReportBlock,
    RtcpError,
    parse_compound,
    receiver_report,
    sender_report,
)
from warmline.media.rtp import ContinuousStream
from warmline.media.sdp import AudioStream

DEFAULT_INTERVAL = 5.0


class ReportedLeg(Protocol):
    """What RTCP reads from its leg (relay_leg.RelayLeg): clocks, counts and addresses."""

    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def outgoing(self) -> ContinuousStream: ...
    @property
    def counters(self) -> LegCounters: ...
    @property
    def reception(self) -> ReceptionStats | None: ...
    @property
    def remote_ssrc(self) -> int | None: ...
    @property
    def stream(self) -> AudioStream | None: ...
    @property
    def remote(self) -> tuple[str, int] | None: ...


@dataclasses.dataclass
class RtcpCounters:
    sent: int = 0
    received: int = 0
    malformed: int = 0


class RtcpSession:
    """Reports for ``leg``; ``send(data, (host, port))`` puts a compound packet on the wire."""

    def __init__(self, leg: ReportedLeg, send: Callable[[bytes, tuple[str, int]], None],
                 interval: float = DEFAULT_INTERVAL) -> None:
        self.leg = leg
        self._send = send
        self.interval = interval
        self.far_end: ReportBlock | None = None  # the far end's latest report on our stream
        self.counters = RtcpCounters()
        self.remote: tuple[str, int] | None = None  # latched on the first valid report
        self._last_sr: tuple[int, float] | None = None  # (middle 32 NTP bits, arrival)
        self._sent_at_last_report = 0
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        if self._handle is None:
            self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def release(self) -> None:
        """Its leg is long over: stopped, and no longer holding the leg (which holds it), so
        reference counting frees both without waiting for a full garbage collection."""
        self.stop()
        if not isinstance(self.leg, weakref.ProxyType):  # a leg in two calls: twice
            self.leg = cast(ReportedLeg, weakref.proxy(self.leg))
        self._send = _nowhere

    def receive(self, data: bytes, source: tuple[str, int]) -> None:
        try:
            reports = parse_compound(data)
        except RtcpError:
            self.counters.malformed += 1
            return
        self.counters.received += 1
        self.remote = self.remote or (source[0], source[1])
        ours = self.leg.outgoing.ssrc
        for report in reports:
            if report.kind == SR and report.ntp is not None:
                seconds, fraction = report.ntp
                middle = (seconds & 0xFFFF) << 16 | fraction >> 16
                self._last_sr = (middle, self.leg.loop.time())
            for block in report.blocks:
                if block.ssrc == ours:
                    self.far_end = block

    # ------------------------------------------------------------------ sending
    def _schedule(self) -> None:
        delay = self.interval * random.uniform(0.5, 1.5)
        self._handle = self.leg.loop.call_later(delay, self._report)

    def _report(self) -> None:
        self._schedule()
        destination = self._destination()
        if destination is None:
            return
        self._send(self.compose(), destination)
        self.counters.sent += 1

    def compose(self) -> bytes:
        """An SR (we sent audio since the last report) or an RR, with our report block."""
        leg, counters = self.leg, self.leg.counters
        blocks = []
        reception, remote_ssrc = leg.reception, leg.remote_ssrc
        if reception is not None and remote_ssrc is not None and reception.received:
            block = reception.report(remote_ssrc)
            if self._last_sr is not None:
                middle, arrived = self._last_sr
                delay = int((leg.loop.time() - arrived) * 65536)
                block = dataclasses.replace(block, last_sr=middle, delay_since_last_sr=delay)
            blocks.append(block)
        ssrc = leg.outgoing.ssrc
        if counters.sent > self._sent_at_last_report:
            self._sent_at_last_report = counters.sent
            rtp_timestamp = leg.outgoing.timestamp_at(leg.loop.time())
            return sender_report(ssrc, time.time(), rtp_timestamp, counters.sent,
                                 counters.sent_octets, blocks)
        return receiver_report(ssrc, blocks)

    def _destination(self) -> tuple[str, int] | None:
        stream, remote = self.leg.stream, self.leg.remote
        if stream is None or remote is None:
            return None
        if self.remote is not None:
            return self.remote
        if stream.rtcp_mux:
            return remote
        return (remote[0], stream.rtcp_port)


def _nowhere(data: bytes, destination: tuple[str, int]) -> None:
    """Where a released session's reports would go (none is sent: it is stopped)."""
