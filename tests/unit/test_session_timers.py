"""RFC 4028 session timers between sans-IO agents on a fake clock: negotiation, refresh,
expiry of a silent far end, 422, and malformed headers."""

from __future__ import annotations

import random

from tests.unit.sipnet import FakeNet
from warmline.sip.events import Target
from warmline.sip.message import Request, Response, parse_message
from warmline.sip.session import CallAnswered, CallEnded, IncomingCall, Session
from warmline.sip.session_timer import SessionTimerSettings
from warmline.sip.useragent import UserAgent, UserAgentConfig

SDP = (b"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 4000 RTP/AVP 0\r\n")
ALICE, BOB = ("127.0.0.1", 5070), ("127.0.0.2", 5080)
DEFAULT = SessionTimerSettings()  # 1800 s offered, Min-SE 90


def agents(alice_timer: SessionTimerSettings = DEFAULT,
           bob_timer: SessionTimerSettings = DEFAULT) -> tuple[FakeNet, UserAgent, UserAgent]:
    net = FakeNet()
    alice = net.add(UserAgent(UserAgentConfig(session_timer=alice_timer),
                              rng=random.Random(1)), *ALICE)
    bob = net.add(UserAgent(UserAgentConfig(session_timer=bob_timer), rng=random.Random(2)),
                  *BOB)
    return net, alice, bob


def call(net: FakeNet, alice: UserAgent, bob: UserAgent) -> tuple[Session, Session]:
    outbound = alice.invite("sip:bob@x", net.now, sdp=SDP, target=Target("udp", *BOB))
    [incoming] = [e for e in net.take(bob) if isinstance(e, IncomingCall)]
    bob.answer(incoming.session, SDP, net.now)
    assert any(isinstance(e, CallAnswered) for e in net.take(alice))
    return outbound, incoming.session


def sent(net: FakeNet, agent: UserAgent, start: bytes) -> list[Request | Response]:
    return [parse_message(t.data) for t in net.sent_by(agent, start)]


def test_the_answering_side_refreshes_by_update_at_half_the_interval() -> None:
    net, alice, bob = agents()
    outbound, inbound = call(net, alice, bob)
    [invite] = sent(net, alice, b"INVITE ")
    assert invite.get("session-expires") == "1800" and "timer" in invite.values("supported")
    [ok] = [m for m in sent(net, bob, b"SIP/2.0 200") if m.cseq.method == "INVITE"]
    assert ok.get("session-expires") == "1800;refresher=uas" and ok.get("require") is None
    assert inbound.timer is not None and inbound.timer.we_refresh
    assert outbound.timer is not None and not outbound.timer.we_refresh
    net.advance(899.0)
    assert not sent(net, bob, b"UPDATE ")
    net.advance(2.0)
    [update] = sent(net, bob, b"UPDATE ")
    assert update.get("session-expires") == "1800;refresher=uac" and not update.body
    net.advance(1800.0)  # refreshed each half interval: nobody hangs up
    assert len(sent(net, bob, b"UPDATE ")) == 3 and not sent(net, alice, b"BYE ")
    assert not [e for e in net.take(alice) if isinstance(e, CallEnded)]


def test_a_refresher_the_far_end_names_is_kept() -> None:
    net, alice, bob = agents()
    outbound = alice.invite("sip:bob@x", net.now, sdp=SDP, target=Target("udp", *BOB),
                            headers=[("Session-Expires", "600;refresher=uac")])
    [incoming] = [e for e in net.take(bob) if isinstance(e, IncomingCall)]
    bob.answer(incoming.session, SDP, net.now)
    net.flush()
    [ok] = [m for m in sent(net, bob, b"SIP/2.0 200") if m.cseq.method == "INVITE"]
    assert ok.get("session-expires") == "600;refresher=uac" and ok.get("require") == "timer"
    assert outbound.timer is not None and outbound.timer.we_refresh


def test_a_silent_refresher_is_hung_up_before_the_session_expires() -> None:
    net, alice, bob = agents()
    outbound, _ = call(net, alice, bob)
    alice_at = Target("udp", *ALICE)
    net.drop = lambda transmit: transmit.target == alice_at  # bob's process died
    net.advance(1800.0 - 32.0 - 0.5)
    assert not sent(net, alice, b"BYE ")
    net.advance(1.0)
    assert sent(net, alice, b"BYE ")  # sent (and retransmitted: nobody answers)
    assert outbound.end_reason == "session timer expired"


def test_a_refresh_nobody_answers_ends_the_call() -> None:
    net, alice, bob = agents()
    _, inbound = call(net, alice, bob)
    net.drop = lambda transmit: transmit.data.startswith(b"SIP/2.0 200") and \
        b"UPDATE" in transmit.data  # alice's answers to refreshes are lost
    net.advance(900.0 + 33.0)  # the UPDATE times out (Timer F)
    assert sent(net, bob, b"BYE ") and inbound.end_reason == "session refresh failed (408)"


def test_a_far_end_without_timer_support_is_refreshed_by_us() -> None:
    net, alice, bob = agents(alice_timer=SessionTimerSettings(interval=0))
    outbound, inbound = call(net, alice, bob)
    [invite] = sent(net, alice, b"INVITE ")
    assert invite.get("session-expires") is None
    [ok] = [m for m in sent(net, bob, b"SIP/2.0 200") if m.cseq.method == "INVITE"]
    assert ok.get("session-expires") == "1800;refresher=uas" and ok.get("require") is None
    assert inbound.timer is not None and inbound.timer.we_refresh
    net.advance(901.0)
    assert sent(net, bob, b"UPDATE ")  # alice allows UPDATE; she answers without a timer
    assert outbound.timer is None


def test_an_interval_below_min_se_gets_422_and_the_retry_asks_for_enough() -> None:
    net, alice, bob = agents(alice_timer=SessionTimerSettings(interval=120),
                             bob_timer=SessionTimerSettings(min_se=600))
    outbound, inbound = call(net, alice, bob)
    [too_small] = [m for m in sent(net, bob, b"SIP/2.0 422") if isinstance(m, Response)]
    assert too_small.get("min-se") == "600"
    first, second = sent(net, alice, b"INVITE ")
    assert second.get("session-expires") == "600" and second.cseq.seq == first.cseq.seq + 1
    assert outbound.timer is not None and outbound.timer.interval == 600
    assert inbound.timer is not None and inbound.timer.interval == 600


def test_a_malformed_session_expires_is_answered_400_with_the_reason() -> None:
    net, _, bob = agents()
    bad = (f"INVITE sip:bob@{BOB[0]} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKx\r\n"
           "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:bob@127.0.0.2>\r\nCall-ID: st-bad\r\n"
           "CSeq: 1 INVITE\r\nContact: <sip:a@127.0.0.1:5070>\r\nMax-Forwards: 70\r\n"
           "Session-Expires: soon;refresher=uac\r\nContent-Length: 0\r\n\r\n").encode()
    bob.receive(bad, Target("udp", *ALICE), net.now)
    [answer] = [parse_message(t.data) for t in bob.pop_transmissions()
                if not t.data.startswith(b"SIP/2.0 100")]
    assert isinstance(answer, Response) and answer.status == 400
    assert "Session-Expires" in (answer.reason or "")
    assert not bob.sessions
