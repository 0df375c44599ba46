"""A small authoritative DNS server for tests: zone-file lines in, answers on 127.0.0.1.

    ZONE = '''
    pbx.test.           300 IN NAPTR 10 10 "s" "SIP+D2U" "" _sip._udp.pbx.test.
    _sip._udp.pbx.test. 300 IN SRV   10 60 5070 a.pbx.test.
    a.pbx.test.         300 IN A     127.0.0.2
    '''
    with DnsServer(ZONE) as dns:
        resolver = Resolver([dns.address])
        ...
        assert dns.count("pbx.test", "NAPTR") == 1

It answers A, AAAA, SRV, NAPTR (any type dnslib reads in a zone file) with the
authoritative bit set, NODATA for a name that exists without that type, NXDOMAIN
otherwise, both with an SOA whose minimum is ``negative_ttl``. Three sets of names
misbehave on purpose: ``servfail`` answers SERVFAIL, ``silent`` never answers, and
``garbage`` sends unreadable bytes. A stub resolver drops unreadable UDP datagrams
(they could be spoofed noise) and would only time out, so ``garbage`` first answers
over UDP with the truncation bit set, which sends the client to TCP, and sends the
garbage there: the one way a real client ends up holding an answer it cannot read.

UDP and TCP share one free port picked by the kernel; one background thread serves
both and stops, bounded in time, when the context manager exits.
"""

from __future__ import annotations

import selectors
import socket
import struct
import threading
from collections.abc import Iterable
from types import TracebackType

from dnslib import QTYPE, RCODE, RR, SOA, DNSError, DNSRecord

GARBAGE = b"\x13\x37 this is not DNS"
_POLL = 0.5  # the serving thread looks at the stop flag at least this often
_TCP_IDLE = 0.5  # a TCP client that says nothing for this long is dropped
_STOP_WAIT = 2.0


class DnsServer:
    """Answers from ``zone`` (zone-file text or lines) on 127.0.0.1 UDP and TCP."""

    def __init__(
        self,
        zone: str | Iterable[str] = "",
        *,
        servfail: Iterable[str] = (),
        silent: Iterable[str] = (),
        garbage: Iterable[str] = (),
        negative_ttl: int = 5,
    ) -> None:
        self.records: list[RR] = []
        self.servfail = {_plain(name) for name in servfail}
        self.silent = {_plain(name) for name in silent}
        self.garbage = {_plain(name) for name in garbage}
        self.negative_ttl = negative_ttl
        self.queries: list[tuple[str, str]] = []  # (name, type) as they arrived, UDP and TCP
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._udp: socket.socket | None = None
        self._tcp: socket.socket | None = None
        self._wake: socket.socket | None = None  # stop() pokes the serving thread through it
        self._waker: socket.socket | None = None
        self.set_zone(zone)

    # -- the test's side --------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        assert self._udp is not None, "start the server first"
        host, port = self._udp.getsockname()[:2]
        return host, port

    def set_zone(self, zone: str | Iterable[str]) -> None:
        """Replace every record (a zone can change while a test runs).

        Every line names its owner: leading blanks are dropped, so zones can be
        indented like the code around them (no zone-file "same owner" lines).
        """
        lines = zone.splitlines() if isinstance(zone, str) else zone
        records = RR.fromZone("\n".join(line.strip() for line in lines))
        with self._lock:
            self.records = records

    def count(self, name: str | None = None, qtype: str | None = None) -> int:
        """How many questions arrived, for ``name`` and/or ``qtype`` when given."""
        wanted = None if name is None else _plain(name)
        with self._lock:
            return sum(
                1
                for asked, asked_type in self.queries
                if wanted in (None, asked) and qtype in (None, asked_type)
            )

    def __enter__(self) -> DnsServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        self._udp, self._tcp = _bind_udp_and_tcp()
        self._wake, self._waker = socket.socketpair()
        self._thread = threading.Thread(target=self._serve, name="test-dns", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._waker is not None:
            self._waker.send(b"x")
        if self._thread is not None:
            self._thread.join(_STOP_WAIT)
            assert not self._thread.is_alive(), "the test DNS server did not stop"
        for sock in (self._udp, self._tcp, self._wake, self._waker):
            if sock is not None:
                sock.close()

    # -- the serving thread -----------------------------------------------------

    def _serve(self) -> None:
        assert self._udp is not None and self._tcp is not None and self._wake is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self._udp, selectors.EVENT_READ)
            selector.register(self._tcp, selectors.EVENT_READ)
            selector.register(self._wake, selectors.EVENT_READ)
            while not self._stopping.is_set():
                for key, _ in selector.select(_POLL):
                    if key.fileobj is self._udp:
                        self._serve_datagram(self._udp)
                    elif key.fileobj is self._tcp:
                        self._serve_connection(self._tcp)

    def _serve_datagram(self, udp: socket.socket) -> None:
        try:
            data, peer = udp.recvfrom(65535)
        except OSError:
            return
        reply = self._reply(data, over_tcp=False)
        if reply is not None:
            udp.sendto(reply, peer)

    def _serve_connection(self, listener: socket.socket) -> None:
        """One TCP client, served in turn: length-prefixed questions until it hangs up."""
        try:
            connection, _ = listener.accept()
        except OSError:
            return
        with connection:
            connection.settimeout(_TCP_IDLE)
            try:
                while not self._stopping.is_set():
                    (length,) = struct.unpack("!H", _read_exactly(connection, 2))
                    reply = self._reply(_read_exactly(connection, length), over_tcp=True)
                    if reply is not None:
                        connection.sendall(struct.pack("!H", len(reply)) + reply)
            except (OSError, EOFError, struct.error):
                return

    # -- answers ----------------------------------------------------------------

    def _reply(self, data: bytes, *, over_tcp: bool) -> bytes | None:
        try:
            query = DNSRecord.parse(data)
        except DNSError:
            return None
        name, qtype = _plain(str(query.q.qname)), QTYPE.get(query.q.qtype)
        with self._lock:
            self.queries.append((name, str(qtype)))
            records = list(self.records)
        if name in self.silent:
            return None
        reply = query.reply(ra=0, aa=1)
        if name in self.garbage:
            if over_tcp:
                return GARBAGE
            reply.header.tc = 1
            return reply.pack()
        if name in self.servfail:
            reply.header.rcode = RCODE.SERVFAIL
            return reply.pack()
        self._fill(reply, name, query.q.qtype, records)
        wire = reply.pack()
        if not over_tcp and len(wire) > _udp_limit(query):
            truncated = query.reply(ra=0, aa=1)
            truncated.header.tc = 1
            return truncated.pack()
        return wire

    def _fill(self, reply: DNSRecord, name: str, qtype: int, records: list[RR]) -> None:
        matches = [
            rr
            for rr in records
            if _plain(str(rr.rname)) == name and (qtype in (rr.rtype, QTYPE.ANY))
        ]
        if matches:
            reply.add_answer(*matches)
            return
        if not _exists(name, records):
            reply.header.rcode = RCODE.NXDOMAIN
        reply.add_auth(self._soa(name))

    def _soa(self, name: str) -> RR:
        """An SOA at the name's last label: it tells the client how long 'nothing' holds."""
        apex = name.rsplit(".", 1)[-1] + "."
        timers = (1, 3600, 600, 86400, self.negative_ttl)
        rdata = SOA("ns." + apex, "hostmaster." + apex, timers)
        return RR(apex, QTYPE.SOA, ttl=self.negative_ttl, rdata=rdata)


def _plain(name: str) -> str:
    return name.lower().rstrip(".")


def _exists(name: str, records: list[RR]) -> bool:
    """A name exists if it owns records or has names below it (an empty non-terminal)."""
    owners = {_plain(str(rr.rname)) for rr in records}
    return any(owner == name or owner.endswith("." + name) for owner in owners)


def _udp_limit(query: DNSRecord) -> int:
    """512 bytes, or what the client's EDNS OPT record says it can take."""
    for rr in query.ar:
        if rr.rtype == QTYPE.OPT:
            return max(512, rr.rclass)
    return 512


def _read_exactly(connection: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = connection.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _bind_udp_and_tcp() -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket on the same free 127.0.0.1 port (the kernel picks it)."""
    for _ in range(50):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            tcp.bind(udp.getsockname())
        except OSError:
            udp.close()
            tcp.close()
            continue
        tcp.listen(8)
        return udp, tcp
    raise RuntimeError("no port free for both UDP and TCP on 127.0.0.1")
