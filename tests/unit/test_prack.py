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


ANSWER = SDP.replace(b"4000", b"5000")


def test_early_media_goes_in_a_reliable_183_and_the_200_waits_for_its_prack() -> None:
    """RFC 3262 §3: a 2xx may not overtake an unPRACKed reliable 1xx with a session
    description; RFC 6337 §3.1.1: the 2xx repeats the answer the 183 gave."""
    net, alice, bob = pair()
    first_prack = [True]

    def lose_first_prack(transmit: object) -> bool:
        data = getattr(transmit, "data", b"")
        if data.startswith(b"PRACK ") and first_prack[0]:
            first_prack[0] = False
            return True
        return False

    net.drop = lose_first_prack
    outbound = alice.invite("sip:bob@x", net.now, sdp=SDP, target=Target("udp", *BOB))
    [incoming] = [e for e in net.take(bob) if isinstance(e, IncomingCall)]
    bob.ring(incoming.session, net.now, 183, sdp=ANSWER)
    net.flush()
    [early] = messages(net, bob, b"SIP/2.0 183")
    assert early.get("require") == "100rel" and early.body == ANSWER
    assert early.get("content-type") == "application/sdp"
    bob.answer(incoming.session, ANSWER, net.now)
    net.flush()
    assert not messages(net, bob, b"SIP/2.0 200")  # held: the PRACK was lost
    net.advance(1.0)  # alice's PRACK transaction retransmits
    finals = [m for m in messages(net, bob, b"SIP/2.0 200") if m.cseq.method == "INVITE"]
    assert finals and finals[0].body == ANSWER
    assert [e for e in net.take(alice) if isinstance(e, CallAnswered)]
    assert outbound.remote_sdp == ANSWER


def test_early_media_to_a_caller_without_100rel_is_unreliable_and_not_held() -> None:
    net, _, bob = pair()
    invite = ("INVITE sip:bob@127.0.0.2:5080 SIP/2.0\r\n"
              "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKold1;rport\r\n"
              "From: <sip:old@x>;tag=o1\r\nTo: <sip:bob@x>\r\nCall-ID: old-phone\r\n"
              "CSeq: 1 INVITE\r\nContact: <sip:old@127.0.0.1:5070>\r\nMax-Forwards: 70\r\n"
              f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n")
    bob.receive(invite.encode() + SDP, Target("udp", *ALICE), net.now)
    [incoming] = [e for e in net.take(bob) if isinstance(e, IncomingCall)]
    bob.ring(incoming.session, net.now, 183, sdp=ANSWER)
    bob.answer(incoming.session, ANSWER, net.now)
    net.flush()
    [early] = messages(net, bob, b"SIP/2.0 183")
    assert early.get("rseq") is None and early.body == ANSWER
    [final] = messages(net, bob, b"SIP/2.0 200")
    assert final.body == ANSWER
