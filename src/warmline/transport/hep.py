"""Every SIP message, as it is sent or received, mirrored to a Homer or sngrep collector in HEP v3.

Operators who already run Homer (or sngrep with ``-L``) want warmline's
signalling beside their proxies' and PBXs' without a packet capture on the
box, and encrypted transports (TLS) cannot be captured on the wire at all.
HEP v3 (sipcapture's Homer Encapsulation Protocol) wraps each message with
its addresses, ports, time and Call-ID in typed chunks; one UDP datagram a
message. Sending never blocks the call path: a datagram that cannot be sent
is counted and dropped, the call goes on. Off unless configured
(``[trace] hep``), since the collector receives the SIP in clear text.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import re
import struct
import time
from dataclasses import dataclass

from warmline.sip.events import Target

log = logging.getLogger("warmline.hep")

PROTOCOL_SIP = 1  # HEP's protocol type for SIP
_TRANSPORT_PROTOCOL = {"udp": 17, "tcp": 6, "tls": 6, "ws": 6, "wss": 6}
_CALL_ID = re.compile(rb"^(?:Call-ID|i)[ \t]*:[ \t]*([^\r\n]+)", re.IGNORECASE | re.MULTILINE)
MAX_DATAGRAM = 65_000  # a message past this is cut: one UDP datagram a message


class Chunk:
    """HEP v3's generic chunk types (vendor 0) that warmline sends."""

    FAMILY = 1
    PROTOCOL = 2
    IPV4_SOURCE = 3
    IPV4_DESTINATION = 4
    IPV6_SOURCE = 5
    IPV6_DESTINATION = 6
    SOURCE_PORT = 7
    DESTINATION_PORT = 8
    SECONDS = 9
    MICROSECONDS = 10
    PROTOCOL_TYPE = 11
    CAPTURE_ID = 12
    AUTH_KEY = 14
    PAYLOAD = 15
    CORRELATION_ID = 17


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int


def _chunk(kind: int, value: bytes) -> bytes:
    return struct.pack("!HHH", 0, kind, 6 + len(value)) + value


def encode(source: Endpoint, destination: Endpoint, transport: str, at: float,
           payload: bytes, *, capture_id: int = 0, password: str | None = None) -> bytes:
    """One HEP v3 packet: ``payload`` (a SIP message) sent from ``source`` to
    ``destination`` over ``transport`` at Unix time ``at``. Addresses must be of one
    family (a hostname or a mix is sent as IPv4 loopback, as the pcap export does)."""
    here, there = _address(source.host), _address(destination.host)
    if here.version != there.version:
        here, there = ipaddress.IPv4Address("127.0.0.1"), ipaddress.IPv4Address("127.0.0.1")
    v6 = here.version == 6
    seconds = int(at)
    chunks = [
        _chunk(Chunk.FAMILY, bytes([10 if v6 else 2])),
        _chunk(Chunk.PROTOCOL, bytes([_TRANSPORT_PROTOCOL.get(transport, 17)])),
        _chunk(Chunk.IPV6_SOURCE if v6 else Chunk.IPV4_SOURCE, here.packed),
        _chunk(Chunk.IPV6_DESTINATION if v6 else Chunk.IPV4_DESTINATION, there.packed),
        _chunk(Chunk.SOURCE_PORT, struct.pack("!H", source.port)),
        _chunk(Chunk.DESTINATION_PORT, struct.pack("!H", destination.port)),
        _chunk(Chunk.SECONDS, struct.pack("!I", seconds)),
        _chunk(Chunk.MICROSECONDS, struct.pack("!I", int((at - seconds) * 1e6))),
        _chunk(Chunk.PROTOCOL_TYPE, bytes([PROTOCOL_SIP])),
        _chunk(Chunk.CAPTURE_ID, struct.pack("!I", capture_id)),
    ]
    if password:
        chunks.append(_chunk(Chunk.AUTH_KEY, password.encode()))
    found = _CALL_ID.search(payload, 0, 4096)
    if found is not None:
        chunks.append(_chunk(Chunk.CORRELATION_ID, found.group(1).strip()))
    chunks.append(_chunk(Chunk.PAYLOAD, payload[:MAX_DATAGRAM]))
    body = b"".join(chunks)
    return b"HEP3" + struct.pack("!H", 6 + len(body)) + body


def decode(packet: bytes) -> dict[int, bytes]:
    """The chunks of a HEP v3 packet by type (vendor 0); ValueError when it is not one.
    For tests and tools: warmline only sends."""
    if packet[:4] != b"HEP3" or len(packet) < 6:
        raise ValueError("not a HEP v3 packet")
    (total,) = struct.unpack("!H", packet[4:6])
    if total != len(packet):
        raise ValueError(f"HEP v3 length {total} but {len(packet)} bytes")
    chunks, offset = {}, 6
    while offset < total:
        if offset + 6 > total:
            raise ValueError(f"HEP v3 chunk header cut short at byte {offset}")
        vendor, kind, length = struct.unpack("!HHH", packet[offset:offset + 6])
        if length < 6 or offset + length > total:
            raise ValueError(f"HEP v3 chunk {kind} has a bad length {length}")
        if vendor == 0:
            chunks[kind] = packet[offset + 6:offset + length]
        offset += length
    return chunks


def _address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
    except ValueError:
        return ipaddress.IPv4Address("127.0.0.1")


class HepSender(asyncio.DatagramProtocol):
    """The shell's tap: each message in or out, as one HEP v3 datagram to the collector.

    ``local`` gives warmline's own address per transport (its listeners), the
    other end of every message."""

    def __init__(self, collector: tuple[str, int], local: dict[str, Endpoint], *,
                 capture_id: int = 0, password: str | None = None) -> None:
        self.collector = collector
        self.local = local
        self.capture_id = capture_id
        self.password = password
        self.sent = 0
        self.dropped = 0
        self._transport: asyncio.DatagramTransport | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, remote_addr=self.collector)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a datagram transport

    def error_received(self, exc: Exception) -> None:
        self.dropped += 1  # e.g. ICMP port unreachable: no collector listening right now

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    def tap(self, direction: str, data: bytes, peer: Target) -> None:
        if self._transport is None:
            self.dropped += 1
            return
        here = self.local.get(peer.transport) or next(iter(self.local.values()))
        there = Endpoint(peer.host, peer.port)
        source, destination = (there, here) if direction == "in" else (here, there)
        packet = encode(source, destination, peer.transport, time.time(), data,
                        capture_id=self.capture_id, password=self.password)
        try:
            self._transport.sendto(packet)
            self.sent += 1
        except OSError:
            self.dropped += 1
