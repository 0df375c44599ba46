"""The embedded media relay: the in-process :class:`~warmline.media.plane.MediaPlane`.

It binds an even port (RTP) and the odd one above it (RTCP) per leg from a
configured range, opens legs (relay_leg.py) and mixes (conference.py) on them,
and owns the compiled fast path they share (fastpath.py). The per-packet work
is in the legs; this module is only what a deployment configures and what the
call logic opens legs from.

``RelayLeg``, ``PlayerFeed`` and ``Pacer`` are re-exported, so one import
serves whoever works with the embedded relay's own types (tests, the demo).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

from warmline.media.conference import Conference
from warmline.media.fastpath import FastPath
from warmline.media.plane import LegAddress, MediaLeg, MediaPlane
from warmline.media.relay_leg import Pacer, PlayerFeed, RelayLeg
from warmline.media.rtcp_session import DEFAULT_INTERVAL

__all__ = ["EmbeddedRelay", "Pacer", "PlayerFeed", "PortRange", "RelayLeg"]


class PortRange:
    """Hands out even local ports from [start, end), skipping ones in use."""

    def __init__(self, start: int, end: int) -> None:
        if not 1024 <= start < end <= 65536:
            raise ValueError(f"media.ports: bad range {start}-{end}")
        self.start, self.end = start + (start % 2), end
        self._next = self.start

    @classmethod
    def parse(cls, text: str) -> PortRange:
        """START-END, e.g. 20000-30000; ValueError saying what is wrong."""
        start, _, end = text.partition("-")
        if not (start.isdigit() and end.isdigit()):
            raise ValueError(f"{text!r} is not START-END, e.g. 20000-30000")
        return cls(int(start), int(end))

    def candidates(self) -> Iterator[int]:
        """Every even port, starting after the last one handed out (spreads reuse)."""
        yield from range(self._next, self.end - 1, 2)
        yield from range(self.start, self._next, 2)

    def taken(self, port: int) -> None:
        self._next = port + 2 if port + 2 < self.end else self.start


class EmbeddedRelay:
    """In-process :class:`MediaPlane` on ``host`` with ports from ``ports``.

    Each leg takes an even port for RTP and the odd one above it for RTCP.
    ``fast_path=False`` keeps every packet in Python (the reference behaviour);
    ``fast_path_threads`` is how many compiled forwarder threads share the bridged pairs
    (0: one per CPU the process may use).
    """

    def __init__(self, host: str, ports: PortRange, *, fast_path: bool = True,
                 fast_path_threads: int = 0, rtcp_interval: float = DEFAULT_INTERVAL) -> None:
        self.host = host
        self.ports = ports
        self.rtcp_interval = rtcp_interval
        self.legs: set[RelayLeg] = set()  # open legs; a closed leg removes itself
        self._want_fast_path = fast_path
        self._fast_path_threads = fast_path_threads
        self.fast_path: FastPath | None = None

    async def open_leg(self, label: str) -> RelayLeg:
        if self._want_fast_path and self.fast_path is None:
            self.fast_path = FastPath.create(self._fast_path_threads)
        for port in self.ports.candidates():
            pair = self._bind_pair(port)
            if pair is None:
                continue
            self.ports.taken(port)
            rtp, rtcp = pair
            leg = RelayLeg(label, LegAddress(self.host, port), rtp, self.fast_path, rtcp,
                           self.rtcp_interval)
            self.legs.add(leg)
            leg.on_close = self.legs.discard
            return leg
        raise OSError(f"media.ports: no free port in {self.ports.start}-{self.ports.end}")

    def open_mix(self) -> Conference:
        """A mix-minus conference that legs of this relay can join."""
        return Conference()

    def spare_legs(self) -> int:
        """Port pairs in the range not held by a leg of ours (others may hold some)."""
        return max(0, (self.ports.end - self.ports.start) // 2 - len(self.legs))

    def healthy(self) -> bool:
        """In-process: as healthy as the process itself."""
        return True

    def release(self, anchor: str) -> None:
        """Embedded legs leave nothing behind their process."""

    def _bind_pair(self, port: int) -> tuple[socket.socket, socket.socket] | None:
        """RTP on ``port`` and RTCP on ``port + 1``, or None if either is taken."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        bound: list[socket.socket] = []
        for number in (port, port + 1):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.bind((self.host, number))
            except OSError:
                sock.close()
                for other in bound:
                    other.close()
                return None
            sock.setblocking(False)
            bound.append(sock)
        return bound[0], bound[1]

    async def close(self) -> None:
        for leg in list(self.legs):
            leg.close()
        if self.fast_path is not None:
            self.fast_path.close()
            self.fast_path = None


def _conforms(relay: EmbeddedRelay, leg: RelayLeg) -> tuple[MediaPlane, MediaLeg]:
    """Never called: mypy proves here that the relay and its legs implement plane.py."""
    return relay, leg
