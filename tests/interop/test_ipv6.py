"""A whole call between two engines over IPv6 loopback ([::1]), UDP."""

from __future__ import annotations

import asyncio

import pytest

from warmline.sip.session import IncomingCall, SessionEvent
from warmline.sip.useragent import UserAgent
from warmline.transport.listen import ListenSpec
from warmline.transport.shell import SipShell

pytestmark = pytest.mark.interop
SDP = b"v=0\r\no=- 1 1 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


def test_call_over_ipv6_loopback() -> None:
    async def scenario() -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        alice, bob = SipShell(UserAgent()), SipShell(UserAgent())
        await alice.listen(ListenSpec("udp", "::1", 0))
        bob_at = await bob.listen(ListenSpec("udp", "::1", 0))

        def on_bob(event: SessionEvent) -> None:
            seen.append(("bob", type(event).__name__))
            if isinstance(event, IncomingCall):
                bob.run(lambda now: bob.ua.answer(event.session, SDP, now))

        alice.on_event = lambda event: seen.append(("alice", type(event).__name__))
        bob.on_event = on_bob
        try:
            session = alice.run(lambda now: alice.ua.invite(
                f"sip:bob@[::1]:{bob_at.port}", now, sdp=SDP))
            for _ in range(100):
                await asyncio.sleep(0.02)
                if ("bob", "CallConfirmed") in seen:
                    break
            alice.run(lambda now: alice.ua.bye(session, now))
            for _ in range(100):
                await asyncio.sleep(0.02)
                if ("alice", "CallEnded") in seen:
                    break
        finally:
            await alice.close()
            await bob.close()
        return seen

    assert asyncio.run(scenario()) == [
        ("bob", "IncomingCall"), ("alice", "CallAnswered"), ("bob", "CallConfirmed"),
        ("bob", "CallEnded"), ("alice", "CallEnded")]
