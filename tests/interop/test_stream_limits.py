"""Stream transports over real sockets: oversize messages, broken framing, connection reuse."""

from __future__ import annotations

import asyncio

import pytest

from tests.interop.peers import engine
from warmline.sip.message import Response, parse_message
from warmline.sip.useragent import UserAgentConfig

pytestmark = pytest.mark.interop

HEAD = (
    "OPTIONS sip:ai@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:9;branch=z9hG4bK{n}\r\n"
    "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:ai@127.0.0.1>\r\nCall-ID: s{n}\r\n"
    "CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
)


async def read_response(reader: asyncio.StreamReader) -> Response:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    message = parse_message(head)
    assert isinstance(message, Response)
    return message


def test_tcp_oversize_gets_513_then_close_and_other_connections_live_on() -> None:
    async def scenario() -> None:
        async with engine("tcp", config=UserAgentConfig(max_message_size=2000)) as running:
            port = running.spec.port
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            big = HEAD.format(n=1) + f"Content-Length: 5000\r\n\r\n{'x' * 5000}"
            writer.write(big.encode())
            await writer.drain()
            assert (await read_response(reader)).status == 513
            assert await asyncio.wait_for(reader.read(), 5) == b""  # closed by warmline
            writer.close()

            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for n in (2, 3):  # two requests on one reused connection
                writer.write((HEAD.format(n=n) + "Content-Length: 0\r\n\r\n").encode())
                await writer.drain()
                assert (await read_response(reader)).status == 200
            writer.write(b"garbage without any framing\r\n\r\n")
            await writer.drain()
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            assert running.ua.counters.garbage_dropped == 1

    asyncio.run(scenario())
