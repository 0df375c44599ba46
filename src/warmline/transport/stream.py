"""TCP and TLS connections: framing with :class:`StreamFramer`, reuse, size limits."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from typing import cast

from warmline.sip.errors import SipParseError
from warmline.sip.events import Target
from warmline.sip.message import StreamFramer

log = logging.getLogger("warmline.transport")

_ids = itertools.count(1)
Deliver = Callable[[bytes, Target], None]
Broken = Callable[[bytes, Target, SipParseError], None]


class StreamConnection(asyncio.Protocol):
    """One TCP/TLS connection; hands each complete SIP message to ``deliver``."""

    def __init__(self, transport_name: str, registry: ConnectionRegistry, max_size: int) -> None:
        self.id = next(_ids)
        self.transport_name = transport_name
        self.registry = registry
        self.framer = StreamFramer(max_size)
        self.transport: asyncio.Transport | None = None
        self.peer: tuple[str, int] = ("", 0)
        self.closed = False
        self._pending: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        peer = self.transport.get_extra_info("peername")
        self.peer = (peer[0], peer[1])
        self.registry.opened(self)
        for data in self._pending:
            self.transport.write(data)
        self._pending.clear()

    def data_received(self, data: bytes) -> None:
        source = Target(self.transport_name, self.peer[0], self.peer[1], self.id)
        try:
            messages = self.framer.feed(data)
        except SipParseError as error:
            # Framing is lost: answer what we can (513/400) and drop the connection.
            self.registry.on_broken(bytes(data[:4096]), source, error)
            self.close()
            return
        for message in messages:
            self.registry.deliver(message, source)

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

    def __init__(self, deliver: Deliver, on_broken: Broken, max_size: int) -> None:
        self.deliver = deliver
        self.on_broken = on_broken
        self.max_size = max_size
        self.by_id: dict[int, StreamConnection] = {}
        self.by_address: dict[tuple[str, str, int], StreamConnection] = {}

    def factory(self, transport_name: str) -> Callable[[], StreamConnection]:
        return lambda: StreamConnection(transport_name, self, self.max_size)

    def opened(self, connection: StreamConnection) -> None:
        self.by_id[connection.id] = connection
        key = (connection.transport_name, *connection.peer)
        self.by_address.setdefault(key, connection)

    def lost(self, connection: StreamConnection) -> None:
        self.by_id.pop(connection.id, None)
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

