"""TCP and TLS connections: framing with :class:`StreamFramer`, reuse, and the limits
that keep a hostile peer from holding sockets and memory.

An inbound connection is cheap for an attacker and costs us a socket, a
buffer and a protocol object: thousands of idle ones, or one request dripped
a byte a second, must not stay forever. So each inbound connection has a
deadline to finish a message it has begun, an idle timeout unless a live
call still uses it (the UA sends that call's BYE down it), and a cap per
source address and in all (:class:`StreamLimits`). Connections we open
ourselves are not capped: we only open them for our own requests.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import cast

from warmline.sip.access import AccessMode
from warmline.sip.errors import SipParseError
from warmline.sip.events import Target
from warmline.sip.message import StreamFramer

log = logging.getLogger("warmline.transport")

_ids = itertools.count(1)
Deliver = Callable[[bytes, Target, AccessMode | None], None]
Broken = Callable[[bytes, Target, SipParseError], None]


@dataclass(frozen=True)
class StreamLimits:
    """``[limits]`` for TCP/TLS; 0 turns one off."""

    idle_timeout: float = 300.0  # seconds without a byte, on a connection no call uses
    message_deadline: float = 10.0  # seconds to finish a message once begun
    per_source: int = 64  # inbound connections from one address
    total: int = 10_000  # inbound connections in all


@dataclass
class StreamRefusals:
    """Inbound connections closed by a limit, by reason (for the metrics)."""

    over_source_cap: int = 0
    over_total_cap: int = 0
    idle: int = 0
    slow_message: int = 0


class StreamConnection(asyncio.Protocol):
    """One TCP/TLS connection; hands each complete SIP message to ``deliver``."""

    def __init__(self, transport_name: str, registry: ConnectionRegistry, max_size: int,
                 access: AccessMode | None = None, inbound: bool = False) -> None:
        self.id = next(_ids)
        self.transport_name = transport_name
        self.registry = registry
        self.framer = StreamFramer(max_size)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.closed = False
        self.access = access  # the listener's mode, for requests arriving on it
        self.inbound = inbound
        self.last_activity = 0.0  # loop time of the last byte
        self.message_started: float | None = None  # loop time a partial message began
        self._pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        peer = self.transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1])
        self.last_activity = self.registry.now()
        if self.inbound and not self.registry.admit(self):
            self.close()
            return
        self.registry.opened(self)
        for data in self._pending:
            self.transport.write(data)
        self._pending.clear()

    def data_received(self, data: bytes) -> None:
        source = Target(self.transport_name, self.peer[0], self.peer[1], self.id)
        now = self.last_activity = self.registry.now()
        try:
            messages = self.framer.feed(data)
        except SipParseError as error:
            # Framing is lost: answer what we can (513/400) and drop the connection.
            self.registry.on_broken(bytes(data[:4096]), source, error)
            self.close()
            return
        if messages or not self.framer.buffered:
            self.message_started = now if self.framer.buffered else None
        elif self.message_started is None:
            self.message_started = now
        for message in messages:
            self.registry.deliver(message, source, self.access)

    def write(self, data: bytes) -> None:
        if self.transport is None:
            self._pending.append(data)
        elif not self.closed:
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.registry.lost(self)


class ConnectionRegistry:
    """Every open stream connection, by id and by the address we dialled (for reuse)."""

    def __init__(self, deliver: Deliver, on_broken: Broken, max_size: int,
                 limits: StreamLimits | None = None,
                 now: Callable[[], float] | None = None,
                 trusted: Callable[[str], bool] = lambda host: False) -> None:
        self.deliver = deliver
        self.on_broken = on_broken
        self.max_size = max_size
        self.limits = limits or StreamLimits()
        self.now = now or (lambda: asyncio.get_running_loop().time())
        self.refusals = StreamRefusals()
        self.trusted = trusted  # sources exempt from the per-source cap (a carrier's SBC)
        self.by_id: dict[int, StreamConnection] = {}
        self.by_address: dict[tuple[str, str, int], StreamConnection] = {}
        self._inbound_by_host: Counter[str] = Counter()
        self._inbound = 0

    def factory(self, transport_name: str, access: AccessMode | None = None,
                inbound: bool = False) -> Callable[[], StreamConnection]:
        return lambda: StreamConnection(transport_name, self, self.max_size, access, inbound)

    def admit(self, connection: StreamConnection) -> bool:
        """Whether an inbound connection is within the per-source and total caps."""
        limits, host = self.limits, connection.peer[0]
        if limits.total and self._inbound >= limits.total:
            self.refusals.over_total_cap += 1
            return False
        if limits.per_source and self._inbound_by_host[host] >= limits.per_source \
                and not self.trusted(host):
            self.refusals.over_source_cap += 1
            if self.refusals.over_source_cap in (1, 100) or \
                    self.refusals.over_source_cap % 10_000 == 0:
                log.warning("closing connections from %s: over %d at once", host,
                            limits.per_source)
            return False
        self._inbound_by_host[host] += 1
        self._inbound += 1
        return True

    def sweep(self, in_use: Collection[int]) -> None:
        """Close inbound connections past their message deadline or idle timeout.

        ``in_use`` are the ids of connections a live call still needs: never idle.
        """
        now, limits = self.now(), self.limits
        for connection in list(self.by_id.values()):
            if not connection.inbound or connection.closed:
                continue
            started = connection.message_started
            if limits.message_deadline and started is not None \
                    and now - started > limits.message_deadline:
                self.refusals.slow_message += 1
                connection.close()
            elif limits.idle_timeout and connection.id not in in_use \
                    and now - connection.last_activity > limits.idle_timeout:
                self.refusals.idle += 1
                connection.close()

    def opened(self, connection: StreamConnection) -> None:
        self.by_id[connection.id] = connection
        key = (connection.transport_name, *connection.peer)
        self.by_address.setdefault(key, connection)

    def lost(self, connection: StreamConnection) -> None:
        if self.by_id.pop(connection.id, None) is not None and connection.inbound:
            host = connection.peer[0]
            self._inbound -= 1
            self._inbound_by_host[host] -= 1
            if self._inbound_by_host[host] <= 0:
                del self._inbound_by_host[host]
        for key, known in list(self.by_address.items()):
            if known is connection:
                del self.by_address[key]

    def find(self, target: Target) -> StreamConnection | None:
        if target.connection is not None:
            found = self.by_id.get(target.connection)
            if found is not None and not found.closed:
                return found
        found = self.by_address.get((target.transport, target.host, target.port))
        return found if found is not None and not found.closed else None

    def remember(self, target: Target, connection: StreamConnection) -> None:
        self.by_address[(target.transport, target.host, target.port)] = connection

    def close_all(self) -> None:
        for connection in list(self.by_id.values()):
            connection.close()

