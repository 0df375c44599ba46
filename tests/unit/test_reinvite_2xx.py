"""Our 2xx to a re-INVITE is resent until its ACK, like the 2xx to the initial INVITE
(RFC 3261 §13.3.1.4, §14.2), between sans-IO agents on a fake network and clock."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

import pytest

from tests.unit.sipnet import FakeNet
from warmline.sip.events import Target, Transmit
from warmline.sip.message import Request, Response, parse_message
from warmline.sip.session import (
    CallAnswered,
    CallConfirmed,
    CallEnded,
    IncomingCall,
    InDialogResponse,
    RequestInDialog,
    Session,
    SessionState,
)
from warmline.sip.session_timer import SessionTimerSettings
from warmline.sip.timers import TimerSettings
from warmline.sip.useragent import UserAgent, UserAgentConfig

SDP_A = (b"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         b"m=audio 4000 RTP/AVP 0\r\n")
SDP_B = SDP_A.replace(b"4000", b"5000")
ALICE, BOB = ("127.0.0.1", 5070), ("127.0.0.2", 5080)
TIMERS = TimerSettings()  # T1 0.5 s, T2 4 s: 64*T1 is 32 s
E = TypeVar("E")


def only(events: Sequence[object], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def agents(config: UserAgentConfig | None = None) -> tuple[FakeNet, UserAgent, UserAgent]:
    net = FakeNet()
    alice = net.add(UserAgent(config, rng=random.Random(1)), *ALICE)
    bob = net.add(UserAgent(config, rng=random.Random(2)), *BOB)
    return net, alice, bob


def call(net: FakeNet, alice: UserAgent, bob: UserAgent) -> tuple[Session, Session]:
    """Alice calls Bob, Bob answers; the call is confirmed both sides."""
    outbound = alice.invite("sip:bob@x", net.now, sdp=SDP_A, target=Target("udp", *BOB))
    [incoming] = only(net.take(bob), IncomingCall)
    bob.answer(incoming.session, SDP_B, net.now)
    assert only(net.take(alice), CallAnswered)
    assert only(net.take(bob), CallConfirmed)
    return outbound, incoming.session


def reinvite(net: FakeNet, sender: UserAgent, sent_on: Session, answerer: UserAgent,
             answered_on: Session, status: int = 200) -> int:
    """``sender`` re-INVITEs, ``answerer`` answers at once; the re-INVITE's CSeq."""
    sender.reinvite(sent_on, sent_on.local_sdp or SDP_A, net.now)
    [event] = only(net.take(answerer), RequestInDialog)
    assert event.request.method == "INVITE"
    answerer.respond(event.transaction, status, net.now, session=answered_on,
                     body=(answered_on.local_sdp or b"") if status == 200 else b"")
    net.flush()
    return event.request.cseq.seq


def oks(net: FakeNet, agent: UserAgent, seq: int) -> list[tuple[float, bytes]]:
    """When ``agent`` sent a 200 to the INVITE with CSeq ``seq``, and its bytes."""
    sender = net.address_of(agent)
    found = []
    for at, address, transmit in net.wire:
        if address == sender and transmit.data.startswith(b"SIP/2.0 200"):
            response = parse_message(transmit.data)
            if response.cseq.method == "INVITE" and response.cseq.seq == seq:
                found.append((at, transmit.data))
    return found


def is_ack(transmit: Transmit, seq: int) -> bool:
    return transmit.data.startswith(b"ACK ") and parse_message(transmit.data).cseq.seq == seq


def resend_offsets(t1: float, t2: float, give_up: float) -> list[float]:
    """When a 2xx is resent after it was first sent: T1, then doubling up to T2."""
    offsets, at, interval = [], 0.0, t1
    while at + interval < give_up:
        at += interval
        offsets.append(at)
        interval = min(2 * interval, t2)
    return offsets


def test_the_resend_schedule_is_the_rfc_one() -> None:
    assert resend_offsets(0.5, 4.0, 32.0)[:6] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    assert resend_offsets(0.5, 4.0, 32.0)[-1] == 31.5


@pytest.mark.parametrize("direction", ["caller re-INVITEs", "callee re-INVITEs"])
def test_a_2xx_to_a_reinvite_is_resent_until_64_t1_then_the_dialog_ends_with_bye(
        direction: str) -> None:
    net, alice, bob = agents()
    outbound, inbound = call(net, alice, bob)
    sender, sent_on, answerer, answered_on = (alice, outbound, bob, inbound) \
        if direction == "caller re-INVITEs" else (bob, inbound, alice, outbound)
    assert sent_on.dialog is not None
    coming = sent_on.dialog.local_seq + 1
    net.drop = lambda transmit: is_ack(transmit, coming)
    start = net.now
    seq = reinvite(net, sender, sent_on, answerer, answered_on)
    assert seq == coming
    assert only(net.take(sender), InDialogResponse)[0].response.status == 200
    net.advance(31.9)
    sent = oks(net, answerer, seq)
    assert [at - start for at, _ in sent] == [0.0, *resend_offsets(TIMERS.t1, TIMERS.t2,
                                                                  TIMERS.timeout)]
    assert len({data for _, data in sent}) == 1  # the same bytes every time
    assert answered_on.state is SessionState.CONFIRMED and not net.sent_by(answerer, b"BYE ")
    net.advance(0.2)  # 64*T1 after the 2xx: §14.2, the UAS SHOULD end the dialog with BYE
    [bye] = [(at, t) for at, a, t in net.wire
             if a == net.address_of(answerer) and t.data.startswith(b"BYE ")]
    assert bye[0] == pytest.approx(start + TIMERS.timeout)
    assert answered_on.ended and answered_on.end_reason == "no ACK for 2xx to re-INVITE"
    assert only(net.take(sender), CallEnded)[0].by_remote
    assert len(oks(net, answerer, seq)) == len(sent)  # and no more resends after the BYE


def test_the_initial_2xx_keeps_its_own_schedule_and_give_up() -> None:
    net, alice, bob = agents()
    net.drop = lambda transmit: is_ack(transmit, 1)
    alice.invite("sip:bob@x", net.now, sdp=SDP_A, target=Target("udp", *BOB))
    [incoming] = only(net.take(bob), IncomingCall)
    bob.answer(incoming.session, SDP_B, net.now)
    net.advance(33.0)
    assert [at for at, _ in oks(net, bob, 1)] == [0.0, *resend_offsets(TIMERS.t1, TIMERS.t2,
                                                                      TIMERS.timeout)]
    assert incoming.session.end_reason == "no ACK for 2xx"


def test_the_ack_stops_the_resends_and_the_call_goes_on() -> None:
    net, alice, bob = agents()
    outbound, inbound = call(net, alice, bob)
    lost = {"acks": 0}

    def lose_two_acks(transmit: Transmit) -> bool:
        if is_ack(transmit, 2) and lost["acks"] < 2:
            lost["acks"] += 1
            return True
        return False

    net.drop = lose_two_acks
    start = net.now
    seq = reinvite(net, alice, outbound, bob, inbound)
    net.advance(60.0)
    # sent, resent at T1 (its ACK lost too), at 3*T1: that ACK arrives, nothing more
    assert [at - start for at, _ in oks(net, bob, seq)] == [0.0, 0.5, 1.5]
    assert inbound._retransmit is None and inbound._reinvite_ack_cseq is None
    assert inbound.state is SessionState.CONFIRMED and not net.sent_by(bob, b"BYE ")


def test_an_ack_for_another_cseq_does_not_stop_the_resends() -> None:
    net, alice, bob = agents()
    outbound, inbound = call(net, alice, bob)
    [first_ack] = net.sent_by(alice, b"ACK ")  # the initial INVITE's (CSeq 1)
    net.drop = lambda transmit: is_ack(transmit, 2)
    seq = reinvite(net, alice, outbound, bob, inbound)
    assert seq == 2
    bob.receive(first_ack.data, Target("udp", *ALICE), net.now)  # late, or retransmitted
    net.advance(4.0)
    assert len(oks(net, bob, seq)) == 4  # 0, 0.5, 1.5, 3.5: still resending
    net.drop = lambda transmit: False
    net.advance(4.0)  # the resend at 7.5 is ACKed with CSeq 2 at last
    assert len(oks(net, bob, seq)) == 5 and inbound._reinvite_ack_cseq is None
    net.advance(40.0)
    assert len(oks(net, bob, seq)) == 5 and not net.sent_by(bob, b"BYE ")


def test_an_ack_from_another_dialog_does_not_stop_the_resends() -> None:
    net, alice, bob = agents()
    outbound, inbound = call(net, alice, bob)
    net.drop = lambda transmit: is_ack(transmit, 2)
    seq = reinvite(net, alice, outbound, bob, inbound)
    [ack] = [t for _, _, t in net.wire if is_ack(t, seq)]
    stranger = parse_message(ack.data)
    assert isinstance(stranger, Request)
    stranger.set("From", str(stranger.from_.with_tag("someone-else")))
    bob.receive(stranger.to_bytes(), Target("udp", *ALICE), net.now)
    net.advance(2.0)
    assert len(oks(net, bob, seq)) == 3 and inbound._reinvite_ack_cseq == seq  # 0, 0.5, 1.5


def test_a_retransmitted_reinvite_is_absorbed_and_the_resent_2xx_answers_it() -> None:
    """RFC 6026 §7.1: in Accepted the server transaction absorbs the retransmission (the
    application never sees it twice, nor is it refused as out of order); the 2xx the UA
    core resends is what reaches the far end, the same bytes every time."""
    net, alice, bob = agents()
    outbound, inbound = call(net, alice, bob)
    lost = {"oks": 0}

    def lose_the_first_2xx(transmit: Transmit) -> bool:
        data = transmit.data
        if data.startswith(b"SIP/2.0 200") and b" 2 INVITE" in data and lost["oks"] == 0:
            lost["oks"] += 1
            return True
        return False

    net.drop = lose_the_first_2xx
    seq = reinvite(net, alice, outbound, bob, inbound)
    assert lost["oks"] == 1 and not only(net.take(alice), InDialogResponse)
    net.advance(0.6)  # Alice resends the re-INVITE (Timer A), Bob resends the 2xx (T1)
    assert len(net.sent_by(alice, b"INVITE ")) == 3  # the call, the re-INVITE, its resend
    assert not only(net.take(bob), RequestInDialog)
    assert not net.sent_by(bob, b"SIP/2.0 500")
    [answered] = only(net.take(alice), InDialogResponse)
    assert answered.response is not None and answered.response.status == 200
    sent = oks(net, bob, seq)
    assert len(sent) == 2 and sent[0][1] == sent[1][1]
    assert inbound._reinvite_ack_cseq is None  # ACKed
    net.advance(40.0)
    assert len(oks(net, bob, seq)) == 2 and outbound.state is SessionState.CONFIRMED


def test_a_reinvite_of_ours_waits_for_the_ack_to_our_2xx() -> None:
    """§14.1: no new INVITE while one is in progress in either direction."""
    net, alice, bob = agents()
    outbound, inbound = call(net, alice, bob)
    lost = {"acks": 0}

    def lose_one_ack(transmit: Transmit) -> bool:
        if is_ack(transmit, 2) and lost["acks"] == 0:
            lost["acks"] += 1
            return True
        return False

    net.drop = lose_one_ack
    reinvite(net, alice, outbound, bob, inbound)
    bob.reinvite(inbound, SDP_B, net.now)
    net.flush()
    assert not net.sent_by(bob, b"INVITE ")  # held
    net.advance(0.6)  # the 2xx is resent at T1, ACKed: then Bob's re-INVITE goes
    [ours] = [(at, t) for at, a, t in net.wire if a == BOB and t.data.startswith(b"INVITE ")]
    [acked] = [at for at, _, t in net.wire if is_ack(t, 2)][1:]
    assert acked <= ours[0]
    [event] = only(net.take(alice), RequestInDialog)
    alice.respond(event.transaction, 200, net.now, session=outbound, body=SDP_A)
    net.advance(1.0)
    assert only(net.take(bob), InDialogResponse)[0].response.status == 200
    assert not net.sent_by(alice, b"SIP/2.0 491")


def test_a_bye_and_a_refer_do_not_wait_for_the_ack() -> None:
    net, alice, bob = agents()
    outbound, inbound = call(net, alice, bob)
    net.drop = lambda transmit: is_ack(transmit, 2)
    seq = reinvite(net, alice, outbound, bob, inbound)
    bob.refer(inbound, "<sip:carol@127.0.0.3>", net.now)
    net.flush()
    assert net.sent_by(bob, b"REFER ")
    bob.bye(inbound, net.now)
    net.flush()
    assert net.sent_by(bob, b"BYE ")
    net.advance(5.0)
    assert len(oks(net, bob, seq)) == 1  # hanging up stopped the resends
    assert inbound.ended and only(net.take(alice), CallEnded)


@pytest.mark.parametrize("status", [200, 488])
def test_a_newer_reinvite_ends_the_wait_for_a_lost_ack(status: int) -> None:
    """The far end sent a new INVITE: it had our 2xx. Its ACK was lost for good; the call
    must not be hung up for it, whatever we answer the new one, and the late ACK of the
    older one changes nothing."""
    net, alice, bob = agents()
    outbound, inbound = call(net, alice, bob)
    net.drop = lambda transmit: is_ack(transmit, 2)
    first = reinvite(net, alice, outbound, bob, inbound)
    net.advance(1.0)
    second = reinvite(net, alice, outbound, bob, inbound, status)
    assert (first, second) == (2, 3)
    net.advance(40.0)
    assert len(oks(net, bob, first)) == 2  # at 0 and 0.5, no more
    assert len(oks(net, bob, second)) == (1 if status == 200 else 0)
    assert inbound.state is SessionState.CONFIRMED and not net.sent_by(bob, b"BYE ")
    [late] = [t for _, _, t in net.wire if is_ack(t, first)][:1]
    bob.receive(late.data, Target("udp", *ALICE), net.now)
    assert inbound._retransmit is None and not bob.pop_transmissions()


def test_the_per_call_state_does_not_grow_with_reinvites() -> None:
    net, alice, bob = agents()
    outbound, inbound = call(net, alice, bob)
    net.drop = lambda transmit: transmit.data.startswith(b"ACK ")  # every ACK lost
    pending = len(bob.scheduler)
    for _ in range(20):
        reinvite(net, alice, outbound, bob, inbound)
        net.advance(2.0)
        assert len(bob.scheduler) <= pending + 1  # one resend timer, whatever came before
    assert inbound.held_requests == [] and inbound._reinvite_ack_cseq == 21


def test_a_session_refresh_by_reinvite_is_resent_until_acked_and_rearms_the_timer() -> None:
    """RFC 4028: Alice refreshes with re-INVITEs (Bob's Allow without UPDATE), Bob answers
    each; the first refresh's ACK is lost and recovered; nobody's timer runs out."""
    net, alice, bob = agents(UserAgentConfig(session_timer=SessionTimerSettings(
        interval=90, min_se=90)))
    outbound = alice.invite("sip:bob@x", net.now, sdp=SDP_A, target=Target("udp", *BOB),
                            headers=[("Session-Expires", "90;refresher=uac")])
    [incoming] = only(net.take(bob), IncomingCall)
    inbound = incoming.session
    bob.answer(inbound, SDP_B, net.now)
    net.flush()
    outbound.peer_methods = frozenset({"INVITE", "ACK", "BYE"})  # a far end without UPDATE
    assert outbound.timer is not None and outbound.timer.we_refresh
    lost = {"acks": 0}

    def lose_the_first_refresh_ack(transmit: Transmit) -> bool:
        if is_ack(transmit, 2) and lost["acks"] == 0:
            lost["acks"] += 1
            return True
        return False

    net.drop = lose_the_first_refresh_ack
    for _ in range(400):  # 400 s: over four intervals
        net.advance(1.0)
        for event in only(net.take(bob), RequestInDialog):
            assert event.request.get("session-expires") is not None
            bob.respond(event.transaction, 200, net.now, session=inbound, body=SDP_B)
    refreshes = [m for m in (parse_message(t.data) for t in net.sent_by(alice, b"INVITE "))
                 if isinstance(m, Request) and m.to.tag is not None]
    assert len(refreshes) >= 8 and lost["acks"] == 1
    assert len(oks(net, bob, 2)) == 2  # the lost ACK cost one resend
    assert all(len(oks(net, bob, r.cseq.seq)) == 1 for r in refreshes[1:])
    for response in (parse_message(data) for _, data in oks(net, bob, 3)):
        assert isinstance(response, Response) and response.get("session-expires")
    assert not net.sent_by(alice, b"BYE ") and not net.sent_by(bob, b"BYE ")
    assert inbound.state is SessionState.CONFIRMED and inbound.timer is not None
