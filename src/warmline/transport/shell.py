"""The asyncio shell around the sans-IO UA core: the only owner of SIP sockets.

Every input (datagram, stream message, timer, application action) is handed
to the core, then :meth:`SipShell.flush` writes what the core wants sent,
hands its events to the application, and re-arms the single loop timer at
the core's next deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar, cast

from warmline.sip.access import AccessMode
from warmline.sip.errors import SipParseError
from warmline.sip.events import Target, Transmit
from warmline.sip.session import SessionEvent
from warmline.sip.uri import SipUri, is_ip_address
from warmline.sip.useragent import UserAgent
from warmline.transport.backlog import BacklogProbe
from warmline.transport.listen import ListenSpec
from warmline.transport.resolver import ResolutionError, Resolver
from warmline.transport.stream import ConnectionRegistry, StreamConnection, StreamLimits

log = logging.getLogger("warmline.transport")
T = TypeVar("T")
EventHandler = Callable[[SessionEvent], None]


class _UdpEndpoint(asyncio.DatagramProtocol):
    def __init__(self, shell: SipShell, access: AccessMode | None = None) -> None:
        self.shell = shell
        self.access = access  # the listener's mode for new requests from untrusted sources
        self.transport: asyncio.DatagramTransport | None = None
        self.probe: BacklogProbe | None = None  # times this listener's queue (backlog.py)
        self._probe_from: tuple[str, int] = ("", 0)
        self._sources: dict[tuple[str, int], Target] = {}
        self._errors: socket.socket | None = None  # reads which destination an ICMP error names

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is no subclass
        self._errors = _icmp_error_reader(transport.get_extra_info("socket"))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.probe is not None:
            self.probe.close()
            self.probe = None
        if self._errors is not None:
            self._errors.close()
            self._errors = None

    def watch_backlog(self, probe: BacklogProbe) -> None:
        self.probe, self._probe_from = probe, probe.source

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        # addr[:2]: an IPv6 address comes with a flow label and a scope id
        if addr[1] == self._probe_from[1] and addr[0] == self._probe_from[0] \
                and self.probe is not None:
            self.probe.arrived(data)
            return
        source = self._sources.get(addr)
        if source is None:
            if len(self._sources) > 65536:
                self._sources.clear()
            source = self._sources[addr] = Target("udp", addr[0], addr[1])
        self.shell.receive(data, source, self.access)

    def error_received(self, exc: Exception) -> None:
        """An ICMP error (port unreachable ...): fail what was sent there now, not at Timer B.

        Without this a dead first SRV target would cost 32 s before failing over
        (RFC 3263 §4.3 counts ICMP as a failure). Linux queues the destination
        with the error (IP_RECVERR); elsewhere the timeout still catches it.
        """
        for address in _icmp_destinations(self._errors):
            self.shell.unreachable(Target("udp", address[0], address[1]))
        log.debug("udp error: %s", exc)


def _icmp_error_reader(sock: socket.socket | None) -> socket.socket | None:
    """A duplicate of ``sock`` with IP_RECVERR on, to read its error queue (Linux only).

    The loop's own transport socket cannot read the error queue (uvloop's wrapper
    has no recvmsg), so a dup of the descriptor does.
    """
    if sock is None or not hasattr(socket, "MSG_ERRQUEUE"):
        return None
    family = sock.family
    level, option = ((socket.IPPROTO_IPV6, getattr(socket, "IPV6_RECVERR", 25))
                     if family == socket.AF_INET6 else
                     (socket.IPPROTO_IP, getattr(socket, "IP_RECVERR", 11)))
    try:
        reader = socket.socket(family, socket.SOCK_DGRAM, fileno=os.dup(sock.fileno()))
        reader.setsockopt(level, option, 1)
    except OSError:
        return None
    return reader


def _icmp_destinations(reader: socket.socket | None) -> list[tuple[str, int]]:
    """The destinations queued ICMP errors were about (drains the queue)."""
    found: list[tuple[str, int]] = []
    while reader is not None and len(found) < 64:
        try:
            _, _, _, address = reader.recvmsg(512, 512,
                                              socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
        except OSError:  # empty (BlockingIOError), or not supported
            break
        if isinstance(address, tuple) and len(address) >= 2:
            found.append((str(address[0]), int(address[1])))
    return found


UDP_BUFFER_BYTES = 4 * 1024 * 1024


def _enlarge_buffers(sock: socket.socket | None) -> None:
    """Ask for 4 MiB socket buffers (capped by net.core.rmem_max/wmem_max).

    The default ~200 KiB holds only a few hundred INVITEs: a burst during a
    short pause (a GC pass, a slow handler) would be dropped by the kernel and
    cost the caller a 500 ms retransmission.
    """
    if sock is None:
        return
    for option in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, UDP_BUFFER_BYTES)


class SipShell:
    """Owns listeners and connections, drives one :class:`UserAgent` on the loop clock."""

    def __init__(
        self,
        agent: UserAgent,
        on_event: EventHandler | None = None,
        *,
        tls_server: ssl.SSLContext | None = None,
        tls_client: ssl.SSLContext | None = None,
        resolver: Resolver | None = None,
        stream_limits: StreamLimits | None = None,
    ) -> None:
        self.ua = agent
        self.resolver = resolver or Resolver()  # for a next hop that is a name (a Contact)
        # the name a TLS peer's certificate must carry, by resolved address (RFC 5922 §4:
        # the domain of the sips: URI, not the address we happened to resolve it to)
        self.tls_names: dict[tuple[str, int], str] = {}
        self.on_event: EventHandler = on_event or (lambda event: None)
        self.tls_server = tls_server
        self.tls_client = tls_client
        self.loop = asyncio.get_running_loop()
        self.connections = ConnectionRegistry(self.receive, self._broken_stream,
                                              agent.config.max_message_size, stream_limits,
                                              self.loop.time, agent.is_trusted)
        self._sweeper: asyncio.TimerHandle | None = None
        self._udp: list[tuple[ListenSpec, _UdpEndpoint]] = []
        self._servers: list[asyncio.Server] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._connecting: set[asyncio.Task[None]] = set()
        self._flushing = False
        self.internal_errors = 0
        # sees every message in ("in") and out ("out") with the peer: a SIP ladder, a trace
        self.tap: Callable[[str, bytes, Target], None] | None = None

    # ------------------------------------------------------------------ listeners
    async def listen(self, spec: ListenSpec) -> ListenSpec:
        """Open a listener; returns the spec with the port actually bound."""
        if spec.transport == "udp":
            family = socket.AF_INET6 if ":" in spec.host else socket.AF_INET
            transport, protocol = await self.loop.create_datagram_endpoint(
                lambda: _UdpEndpoint(self, spec.access), local_addr=(spec.host, spec.port),
                family=family)
            _enlarge_buffers(transport.get_extra_info("socket"))
            bound = spec.bound_to(transport.get_extra_info("sockname")[1])
            self._udp.append((bound, protocol))
            if agent_limit := self.ua.config.max_queue_delay:
                self._watch_backlog(protocol, (bound.host, bound.port), agent_limit)
        else:
            context = self.tls_server if spec.transport == "tls" else None
            if spec.transport == "tls" and context is None:
                raise ValueError(f"--sip {spec}: TLS needs a certificate and key")
            server = await self.loop.create_server(
                self.connections.factory(spec.transport, spec.access, inbound=True),
                spec.host, spec.port, ssl=context)
            self._servers.append(server)
            self._sweep_connections()
            bound = spec.bound_to(server.sockets[0].getsockname()[1])
        self.ua.add_listener(bound.transport, *bound.public)
        return bound

    def _watch_backlog(self, endpoint: _UdpEndpoint, address: tuple[str, int],
                       limit: float) -> None:
        """Time the listener's queue; each wait goes to the UA's admission (sip/admission.py),
        which caps new calls while the node is behind."""
        admission = self.ua.admission

        def measured(delay: float) -> None:
            was = admission.cap
            admission.measured(delay, self.loop.time(), address)
            if was is None and admission.cap is not None:
                log.warning("SIP input on %s:%d waits %.2f s to be read (over [limits] "
                            "max_queue_delay %.2f s): new calls capped at %.0f a second, "
                            "the rest get 503", *address, delay, limit, admission.cap)
            elif was is not None and admission.cap is None:
                log.warning("SIP input on %s:%d caught up: every new call taken again "
                            "(%d refused meanwhile)", *address, admission.refused)

        try:
            endpoint.watch_backlog(BacklogProbe(self.loop, address, measured, limit))
        except OSError as error:  # the node runs; only the overload answer is missing
            log.warning("cannot watch the SIP input queue of %s:%d: %s", *address, error)

    def _sweep_connections(self) -> None:
        """Every second: close slow-to-finish and idle inbound connections (stream.py)."""
        if self._sweeper is not None:
            return

        def sweep() -> None:
            in_use = {session.flow.connection for session in self.ua.sessions
                      if session.flow is not None and session.flow.connection is not None}
            self.connections.sweep(in_use)
            self._sweeper = self.loop.call_later(1.0, sweep)

        self._sweeper = self.loop.call_later(1.0, sweep)

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._timer is not None:
            self._timer.cancel()
        for _, endpoint in self._udp:
            if endpoint.probe is not None:  # now, not when the loop gets to connection_lost
                endpoint.probe.close()
                endpoint.probe = None
            if endpoint.transport is not None:
                endpoint.transport.close()
        for server in self._servers:
            server.close()
        self.connections.close_all()
        for server in self._servers:
            await server.wait_closed()
        for task in list(self._connecting):
            task.cancel()

    @property
    def listening(self) -> bool:
        """Whether a SIP listener is open (for readiness)."""
        return any(endpoint.transport is not None and not endpoint.transport.is_closing()
                   for _, endpoint in self._udp) or any(
            server.is_serving() for server in self._servers)

    # ------------------------------------------------------------------ driving
    def now(self) -> float:
        return self.loop.time()

    def receive(self, data: bytes, source: Target, access: AccessMode | None = None) -> None:
        if self.tap is not None:
            self.tap("in", data, source)
        try:
            self.ua.receive(data, source, self.loop.time(), access)
        except Exception:  # a core bug must cost one message, not the engine
            self.internal_errors += 1
            log.exception("internal error on a message from %s:%s", source.host, source.port)
        self.flush()

    def run(self, action: Callable[[float], T]) -> T:
        """Run an application action against the core at the current time, then flush."""
        result = action(self.loop.time())
        self.flush()
        return result

    def flush(self) -> None:
        if self._flushing:
            return  # an event handler acted; the outer flush picks its output up
        self._flushing = True
        try:
            while True:
                for transmit in self.ua.pop_transmissions():
                    self._send(transmit)
                events = self.ua.pop_events()
                if not events:
                    break
                for event in events:
                    self._deliver(event)
        finally:
            self._flushing = False
        self._arm_timer()

    def _deliver(self, event: SessionEvent) -> None:
        try:
            self.on_event(event)
        except Exception:  # an application bug must not take the engine down
            log.exception("event handler failed on %s", type(event).__name__)

    def _arm_timer(self) -> None:
        deadline = self.ua.next_deadline()
        if deadline is None:
            return
        if self._timer_at is not None and self._timer_at <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = deadline
        self._timer = self.loop.call_at(deadline, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.ua.handle_timer(self.loop.time())
        self.flush()

    # ------------------------------------------------------------------ sending
    def _send(self, transmit: Transmit) -> None:
        target = transmit.target
        if self.tap is not None:
            self.tap("out", transmit.data, target)
        if target.transport == "udp":
            self._send_udp(target, transmit.data)
            return
        connection = self.connections.find(target)
        if connection is None:
            connection = self._connect(target)
        connection.write(transmit.data)

    def _send_udp(self, target: Target, data: bytes) -> None:
        if not is_ip_address(target.host):  # a Contact or Via naming a host: resolve first
            self._spawn(self._send_udp_to_name(target, data))
            return
        want_v6 = ":" in target.host
        for spec, endpoint in self._udp:
            if (":" in spec.host) == want_v6 and endpoint.transport is not None:
                endpoint.transport.sendto(data, (target.host, target.port))
                return
        log.warning("no UDP listener for %s; dropped %d bytes", target.host, len(data))

    async def _send_udp_to_name(self, target: Target, data: bytes) -> None:
        try:
            resolution = await self.resolver.resolve(
                SipUri(host=target.host, port=target.port, params=(("transport", "udp"),)))
        except ResolutionError as error:
            log.warning("cannot send to %s:%s: %s", target.host, target.port, error)
            self.unreachable(target)
            return
        found = resolution.targets[0]
        self._send_udp(Target("udp", found.host, found.port), data)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = self.loop.create_task(work)
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    def _connect(self, target: Target) -> StreamConnection:
        connection = self.connections.factory(target.transport)()
        self.connections.remember(target, connection)
        context = self.tls_client if target.transport == "tls" else None
        if target.transport == "tls" and context is None:
            context = ssl.create_default_context()

        name = self.tls_names.get((target.host, target.port), target.host)

        async def open_connection() -> None:
            try:
                await self.loop.create_connection(
                    lambda: connection, target.host, target.port, ssl=context,
                    server_hostname=name if context else None)
            except (OSError, ssl.SSLError) as error:
                log.warning("cannot connect to %s:%s/%s: %s", target.host, target.port,
                            target.transport, error)
                connection.connection_lost(error)
                self.ua.transport_error(target, self.loop.time())
                self.flush()

        self._spawn(open_connection())
        return connection

    def unreachable(self, target: Target) -> None:
        """Nothing listens at ``target`` (ICMP): its client transactions fail now."""
        self.ua.transport_error(target, self.loop.time())
        self.flush()

    def _broken_stream(self, data: bytes, source: Target, error: SipParseError) -> None:
        self.ua.reject_unparsable(data, source, error)
        self.flush()
