"""Behind NAT: a listener bound to one address advertises another in Via, Contact and SDP."""

from __future__ import annotations

import asyncio

import pytest

from tests.interop.peers import free_port
from warmline.settings import ServeSettings
from warmline.sip.message import Request, Response, parse_message
from warmline.sip.session import IncomingCall, Session, SessionEvent
from warmline.sip.useragent import UserAgent
from warmline.transport.listen import ListenSpec, parse_listen
from warmline.transport.shell import SipShell

pytestmark = pytest.mark.interop
SDP = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 4000 RTP/AVP 0\r\n")
PUBLIC = "127.0.0.5"  # the "NAT's" address: a port forward to the bound one


class PortForward(asyncio.DatagramProtocol):
    """A NAT's port forward: what reaches the public address goes to the inside one (seen
    coming from the NAT), and what the inside sends back goes to the peer outside."""

    def __init__(self, inside: tuple[str, int]) -> None:
        self.inside = inside
        self.outside: tuple[str, int] | None = None
        self.transport: asyncio.DatagramTransport | None = None
        self.forwarded = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        assert self.transport is not None
        if addr == self.inside:
            if self.outside is not None:
                self.transport.sendto(data, self.outside)
            return
        self.outside = addr
        self.transport.sendto(data, self.inside)
        self.forwarded += 1


def test_a_call_through_a_port_forward_uses_the_advertised_address() -> None:
    async def scenario() -> tuple[list[str], list[bytes], int, int]:
        seen: list[str] = []
        public_port = free_port()
        alice = SipShell(UserAgent())
        bob = SipShell(UserAgent())
        await alice.listen(ListenSpec("udp", "127.0.0.1", 0))
        inside = await bob.listen(parse_listen(f"udp:127.0.0.1:0;advertise={PUBLIC}:{public_port}"))
        loop = asyncio.get_running_loop()
        forward_transport, forward = await loop.create_datagram_endpoint(
            lambda: PortForward(("127.0.0.1", inside.port)), local_addr=(PUBLIC, public_port))
        sent_by_bob: list[bytes] = []
        bob.tap = lambda direction, data, peer: sent_by_bob.append(data) \
            if direction == "out" else None

        answered: list[Session] = []

        def on_bob(event: SessionEvent) -> None:
            seen.append(type(event).__name__)
            if isinstance(event, IncomingCall):
                answered.append(event.session)
                bob.run(lambda now: bob.ua.answer(event.session, SDP, now))

        alice.on_event = lambda event: seen.append(f"alice {type(event).__name__}")
        bob.on_event = on_bob
        try:  # alice knows only the public address
            alice.run(lambda now: alice.ua.invite(f"sip:bob@{PUBLIC}:{public_port}", now,
                                                  sdp=SDP))
            await _until(lambda: "CallConfirmed" in seen)
            bob.run(lambda now: bob.ua.bye(answered[0], now))  # its 200 comes back via Via
            await _until(lambda: "alice CallEnded" in seen and "CallEnded" in seen)
        finally:
            forward_transport.close()
            await alice.close()
            await bob.close()
        return seen, sent_by_bob, forward.forwarded, public_port

    seen, sent_by_bob, forwarded, public_port = asyncio.run(scenario())
    assert "CallConfirmed" in seen and "CallEnded" in seen and "alice CallEnded" in seen
    assert forwarded >= 2  # the INVITE and the ACK (to the Contact) came in through the forward
    [ok] = [m for m in map(parse_message, sent_by_bob)
            if isinstance(m, Response) and m.status == 200 and m.cseq.method == "INVITE"]
    assert (ok.get("contact") or "").count(f"{PUBLIC}:") == 1
    [bye] = [m for m in map(parse_message, sent_by_bob) if isinstance(m, Request)]
    assert bye.method == "BYE" and f"{PUBLIC}:{public_port}" in str(bye.top_via)


def test_sdp_offers_the_advertised_media_address() -> None:
    bound = ServeSettings(listen=(parse_listen("udp:127.0.0.1:5070;advertise=127.0.0.6"),))
    assert (bound.media_host, bound.media_address) == ("127.0.0.1", "127.0.0.6")
    explicit = ServeSettings(listen=bound.listen, media_advertise="127.0.0.7")
    assert explicit.media_address == "127.0.0.7"
    assert ServeSettings().media_address == "127.0.0.1"


async def _until(condition: object, seconds: float = 5.0) -> None:
    for _ in range(int(seconds / 0.02)):
        if callable(condition) and condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("timed out")
