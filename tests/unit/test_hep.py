"""HEP v3 packets as Homer reads them; the trace config; what a written trace keeps out."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import struct
from pathlib import Path

import pytest

from warmline.config import ConfigError, load
from warmline.records.trace import DTMF, SipTrace
from warmline.records.trace_store import find_trace, write_trace
from warmline.sip.events import Target
from warmline.transport.hep import Chunk, Endpoint, HepSender, decode, encode

INVITE = (b"INVITE sip:ai@127.0.0.1 SIP/2.0\r\nCall-ID: abc@host\r\nCSeq: 1 INVITE\r\n"
          b"Content-Length: 0\r\n\r\n")


def test_a_packet_carries_addresses_ports_time_call_id_and_the_message() -> None:
    packet = encode(Endpoint("192.0.2.1", 5060), Endpoint("192.0.2.2", 5070), "udp",
                    1700000000.25, INVITE, capture_id=7, password="s3cret")
    assert packet[:4] == b"HEP3" and struct.unpack("!H", packet[4:6])[0] == len(packet)
    chunks = decode(packet)
    assert chunks[Chunk.FAMILY] == b"\x02" and chunks[Chunk.PROTOCOL] == bytes([17])
    assert chunks[Chunk.IPV4_SOURCE] == ipaddress.ip_address("192.0.2.1").packed
    assert chunks[Chunk.IPV4_DESTINATION] == ipaddress.ip_address("192.0.2.2").packed
    assert struct.unpack("!H", chunks[Chunk.SOURCE_PORT])[0] == 5060
    assert struct.unpack("!H", chunks[Chunk.DESTINATION_PORT])[0] == 5070
    assert struct.unpack("!I", chunks[Chunk.SECONDS])[0] == 1700000000
    assert struct.unpack("!I", chunks[Chunk.MICROSECONDS])[0] == 250000
    assert struct.unpack("!I", chunks[Chunk.CAPTURE_ID])[0] == 7
    assert chunks[Chunk.AUTH_KEY] == b"s3cret" and chunks[Chunk.CORRELATION_ID] == b"abc@host"
    assert chunks[Chunk.PAYLOAD] == INVITE and chunks[Chunk.PROTOCOL_TYPE] == b"\x01"


def test_ipv6_peers_and_streams_are_said_as_such() -> None:
    chunks = decode(encode(Endpoint("[::1]", 5061), Endpoint("2001:db8::5", 5060), "tls",
                           0.0, INVITE))
    assert chunks[Chunk.FAMILY] == bytes([10]) and chunks[Chunk.PROTOCOL] == bytes([6])
    assert chunks[Chunk.IPV6_DESTINATION] == ipaddress.ip_address("2001:db8::5").packed


@pytest.mark.parametrize("packet", [b"HEP2\x00\x06", b"HEP3\x00\x09abc",
                                    b"HEP3\x00\x0c\x00\x00\x00\x01\x00\x40"])
def test_a_damaged_packet_is_refused(packet: bytes) -> None:
    with pytest.raises(ValueError):
        decode(packet)


def test_the_sender_sends_one_datagram_a_message_and_never_raises() -> None:
    async def scenario() -> list[bytes]:
        collector = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        collector.bind(("127.0.0.1", 0))
        collector.settimeout(2)
        sender = HepSender(collector.getsockname(), {"udp": Endpoint("127.0.0.1", 5070)})
        sender.tap("in", INVITE, Target("udp", "127.0.0.9", 5099))  # not open yet: dropped
        await sender.open()
        sender.tap("in", INVITE, Target("udp", "127.0.0.9", 5099))
        sender.tap("out", b"SIP/2.0 200 OK\r\nCall-ID: abc@host\r\n\r\n",
                   Target("tcp", "127.0.0.9", 5099))  # no TCP listener: the UDP one's address
        got = [collector.recv(70000), collector.recv(70000)]
        sender.close()
        collector.close()
        assert (sender.sent, sender.dropped) == (2, 1)
        return got

    inbound, outbound = (decode(p) for p in asyncio.run(scenario()))
    assert struct.unpack("!H", inbound[Chunk.SOURCE_PORT])[0] == 5099
    assert struct.unpack("!H", inbound[Chunk.DESTINATION_PORT])[0] == 5070
    assert struct.unpack("!H", outbound[Chunk.SOURCE_PORT])[0] == 5070
    assert outbound[Chunk.PROTOCOL] == bytes([6])


@pytest.mark.parametrize(("body", "named"), [
    ('hep = "udp:collector"', "trace.hep"),
    ('hep = "tcp:127.0.0.1:9060"', "trace.hep"),
    ('hep = "udp:127.0.0.1:9060"\nhep_password = "inline"', "hep_password_env"),
    ('hep = "udp:127.0.0.1:9060"\nhep_capture_id = -1', "trace.hep_capture_id"),
])
def test_a_bad_trace_section_names_its_key(tmp_path: Path, body: str, named: str) -> None:
    path = tmp_path / "warmline.toml"
    path.write_text(f"[trace]\n{body}\n")
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        load(path)


def test_a_written_trace_keeps_out_keys_pressed_and_card_numbers(tmp_path: Path) -> None:
    trace = SipTrace()
    peer = Target("udp", "192.0.2.10", 5060)
    trace.tap("in", b"INFO sip:ai@127.0.0.1 SIP/2.0\r\nCall-ID: leg\r\nCSeq: 2 INFO\r\n"
              b"Content-Type: application/dtmf-relay\r\nContent-Length: 24\r\n\r\n"
              b"Signal=4\r\nDuration=160\r\n", peer)
    trace.tap("in", b"INVITE sip:ai@127.0.0.1 SIP/2.0\r\nCall-ID: leg\r\nCSeq: 1 INVITE\r\n"
              b"X-Account: card 4111 1111 1111 1111\r\nContent-Length: 0\r\n\r\n", peer)
    assert len(trace.peek(["leg"])) == 2  # a live call's trace is read, not taken
    from warmline.brain.redact import redact

    write_trace(tmp_path, "call-1", [], trace.take(["leg"]), redact)
    _, messages = find_trace(tmp_path, "call-1")
    info, invite = messages
    assert info.text.endswith("\r\n\r\n" + DTMF) and "Signal=4" not in info.text
    assert "4111" not in invite.text and "[card number]" in invite.text
    assert "Call-ID: leg" in invite.text  # the routing stays
