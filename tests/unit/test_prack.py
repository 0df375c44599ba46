"""RFC 3262 between sans-IO agents: reliable 1xx both ways, PRACK, retransmission, give-up."""

from __future__ import annotations

import random

from tests.unit.sipnet import FakeNet
from warmline.sip.events import Target
from warmline.sip.message import Request, Response, parse_message
from warmline.sip.session import CallAnswered, CallEnded, CallProgress, IncomingCall, Session
from warmline.sip.useragent import UserAgent

SDP = (b"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 4000 RTP/AVP 0\r\n")
ALICE, BOB = ("127.0.0.1", 5070), ("127.0.0.2", 5080)


def pair() -> tuple[FakeNet, UserAgent, UserAgent]:
    net = FakeNet()
    return (net, net.add(UserAgent(rng=random.Random(1)), *ALICE),
            net.add(UserAgent(rng=random.Random(2)), *BOB))


def ringing(net: FakeNet, alice: UserAgent, bob: UserAgent) -> tuple[Session, Session]:
    """alice calls requiring 100rel; bob rings (reliably)."""
    outbound = alice.invite("sip:bob@x", net.now, sdp=SDP, target=Target("udp", *BOB),
                            headers=[("Require", "100rel")])
    [incoming] = [e for e in net.take(bob) if isinstance(e, IncomingCall)]
    bob.ring(incoming.session, net.now)
    net.flush()
    return outbound, incoming.session


def messages(net: FakeNet, agent: UserAgent, start: bytes) -> list[Request | Response]:
    return [parse_message(t.data) for t in net.sent_by(agent, start)]


def test_a_required_180_is_reliable_and_our_prack_stops_its_retransmission() -> None:
    net, alice, bob = pair()
    outbound, inbound = ringing(net, alice, bob)
    [ring] = messages(net, bob, b"SIP/2.0 180")
    assert ring.get("require") == "100rel" and (ring.get("rseq") or "").isdigit()
    [prack] = messages(net, alice, b"PRACK ")
    assert prack.get("rack") == f"{ring.get('rseq')} 1 INVITE"
    assert [m.status for m in messages(net, bob, b"SIP/2.0 200")] == [200]  # to the PRACK
    assert len(only_progress(net, alice)) == 1
    net.advance(10.0)
    assert len(messages(net, bob, b"SIP/2.0 180")) == 1  # PRACKed: not sent again
    bob.answer(inbound, SDP, net.now)
    assert [e for e in net.take(alice) if isinstance(e, CallAnswered)]
    bye_seq = outbound.dialog.create_request("BYE").cseq.seq  # type: ignore[union-attr]
    assert bye_seq > prack.cseq.seq  # the early dialog's CSeq carried into the call


def only_progress(net: FakeNet, agent: UserAgent) -> list[CallProgress]:
    return [e for e in net.take(agent) if isinstance(e, CallProgress)]


def test_a_lost_prack_leaves_the_1xx_retransmitted_and_then_the_call_fails_504() -> None:
    net, alice, bob = pair()
    net.drop = lambda transmit: transmit.data.startswith(b"PRACK ")
    _, inbound = ringing(net, alice, bob)
    net.advance(2.0)
    retransmitted = messages(net, bob, b"SIP/2.0 180")
    assert len(retransmitted) >= 3 and len(messages(net, alice, b"PRACK ")) >= 2
    assert len(only_progress(net, alice)) == 1  # the retransmissions are not new progress
    net.advance(33.0)
    assert any(m.status == 504 for m in messages(net, bob, b"SIP/2.0 504"))
    assert [e for e in net.take(bob) if isinstance(e, CallEnded)] and inbound.ended


def test_a_prack_naming_nothing_we_sent_gets_481_and_a_garbled_one_400() -> None:
    net, alice, bob = pair()
    _, inbound = ringing(net, alice, bob)
    base = (f"PRACK sip:bob@127.0.0.2:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;"
            f"branch=z9hG4bK{{b}}\r\nFrom: <sip:a@x>;tag=zz\r\n"
            f"To: <sip:bob@x>;tag={inbound.local_tag}\r\nCall-ID: {inbound.call_id}\r\n"
            "CSeq: 9 PRACK\r\nMax-Forwards: 70\r\nRAck: {rack}\r\nContent-Length: 0\r\n\r\n")
    for branch, rack, status in (("p1", "999 1 INVITE", 481), ("p2", "soon", 400)):
        bob.receive(base.format(b=branch, rack=rack).encode(), Target("udp", *ALICE), net.now)
        answers = [parse_message(t.data) for t in bob.pop_transmissions()]
        assert [m.status for m in answers if isinstance(m, Response)] == [status]
