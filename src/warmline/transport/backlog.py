"""How far behind the node is on its SIP input, measured where it matters: the UDP queue.

Past its capacity a node that takes every call takes none well: requests wait
in the listener's receive queue, the peers' T1 (500 ms) runs out, they
retransmit, the calls already up get their answers late and fail, and the
failed ones still hold media. Measured on the blind-transfer bench: asked 370
cycles/s where the ceiling was ~340, the SIP socket held 2.3 MB unread and 40%
of the calls failed, while the event loop's own timer lag stayed under 100 ms
(timers fire between the reads; the backlog is in the kernel's queue, where no
timer sees it). So every 100 ms a :class:`BacklogProbe` sends one datagram
from its own socket to the listener and times how long it waited to be read.
The UA core's admission (sip/admission.py) turns those waits into a cap on new
calls a second (two probes in a row over the limit: one stall of the loop is
not a backlog); the INVITEs past it and OPTIONS probes get 503 with
Retry-After at the cost of a parse, so a proxy in front sends the calls
elsewhere and the ones in progress finish.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable

PROBE_INTERVAL = 0.1  # seconds between probes while none is in flight
PROBE_LOST_AFTER = 5.0  # a probe not back by then (or twice the limit) was dropped: again
PROBE_MAGIC = b"warmline backlog probe "


class BacklogProbe:
    """One probe datagram at a time to a UDP listener, from a socket of its own; the
    listener hands back what comes from :attr:`source` (:meth:`arrived`)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, listener: tuple[str, int],
                 on_delay: Callable[[float], None], late_after: float) -> None:
        self.loop = loop
        self.on_delay = on_delay  # each probe's wait, once (a late one: its age then)
        self.late_after = late_after
        host = _reachable_host(listener[0])
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._target = (host, listener[1])
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        self._sock.setblocking(False)
        self._sock.bind((host, 0))
        self.source: tuple[str, int] = self._sock.getsockname()[:2]
        self._token = PROBE_MAGIC + os.urandom(8).hex().encode()
        self._sequence = 0  # in each payload: a stale probe is not timed against a new one
        self._payload = b""
        self._lost_after = max(PROBE_LOST_AFTER, 2 * late_after)
        self._sent_at: float | None = None
        self._told_late = False  # the probe in flight was reported late already
        self._handle: asyncio.TimerHandle | None = loop.call_later(PROBE_INTERVAL, self._tick)

    def arrived(self, data: bytes) -> None:
        """A datagram from :attr:`source` reached the listener: ours is timed."""
        if data != self._payload or self._sent_at is None:
            return
        delay = self.loop.time() - self._sent_at
        self._sent_at = None
        if not self._told_late:
            self.on_delay(delay)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._sock.close()

    def _tick(self) -> None:
        """Send a probe if none is in flight. One in flight longer than ``late_after`` is
        reported at once, with its age so far (a backlog is seen while it builds, not a
        queue's length later), and only once; one not back after PROBE_LOST_AFTER (or
        twice the limit) was dropped by a full queue and another is sent, with its own
        sequence number (the old one, should it come, is not timed)."""
        now = self.loop.time()
        if self._sent_at is not None:
            age = now - self._sent_at
            if age >= self.late_after and not self._told_late:
                self._told_late = True
                self.on_delay(age)
            if age >= self._lost_after:
                self._sent_at = None
        if self._sent_at is None:
            self._sequence += 1
            self._payload = self._token + b" %d" % self._sequence
            with contextlib.suppress(OSError):  # a send that fails is tried at the next tick
                self._sock.sendto(self._payload, self._target)
                self._sent_at, self._told_late = now, False
        self._handle = self.loop.call_later(PROBE_INTERVAL, self._tick)


def _reachable_host(bound: str) -> str:
    """Where a listener bound to ``bound`` can be reached from this host."""
    if bound in ("", "0.0.0.0"):
        return "127.0.0.1"
    if bound == "::":
        return "::1"
    return bound.strip("[]")
