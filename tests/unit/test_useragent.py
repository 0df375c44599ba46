"""The UA core end to end between two sans-IO agents on a fake network and clock."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TypeVar

import pytest

from tests.unit.sipnet import FakeNet
from warmline.sip.auth import Credentials, DigestServer
from warmline.sip.events import Target
from warmline.sip.message import Request, Response, parse_message
from warmline.sip.session import (
    CallAnswered,
    CallConfirmed,
    CallEnded,
    CallFailed,
    CallProgress,
    IncomingCall,
    InDialogResponse,
    ProbeResult,
    ReferNotify,
    ReferResponse,
    RequestInDialog,
    Session,
    SessionState,
)
from warmline.sip.useragent import UserAgent, UserAgentConfig

SDP_A = (b"v=0\r\no=a 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         b"m=audio 4000 RTP/AVP 0\r\n")
SDP_B = SDP_A.replace(b"4000", b"5000")
E = TypeVar("E")
ALICE = ("127.0.0.1", 5070)
BOB = ("127.0.0.2", 5080)


def pair(config_b: UserAgentConfig | None = None, config_a: UserAgentConfig | None = None,
         ) -> tuple[FakeNet, UserAgent, UserAgent]:
    net = FakeNet()
    alice = net.add(UserAgent(config_a, rng=random.Random(1)), *ALICE)
    bob = net.add(UserAgent(config_b, rng=random.Random(2)), *BOB)
    return net, alice, bob


def call(net: FakeNet, alice: UserAgent, bob: UserAgent) -> tuple[Session, Session]:
    outbound = alice.invite("sip:bob@example.com", net.now, sdp=SDP_A,
                            target=Target("udp", *BOB))
    incoming = [e for e in net.take(bob) if isinstance(e, IncomingCall)]
    assert len(incoming) == 1
    inbound = incoming[0].session
    bob.answer(inbound, SDP_B, net.now)
    answered = [e for e in net.take(alice) if isinstance(e, CallAnswered)]
    assert answered and answered[0].session is outbound
    assert any(isinstance(e, CallConfirmed) for e in net.take(bob))
    return outbound, inbound


def only(events: Sequence[object], kind: type[E]) -> list[E]:
    return [e for e in events if isinstance(e, kind)]


def test_call_setup_and_teardown() -> None:
    net, alice, bob = pair()
    outbound, inbound = call(net, alice, bob)
    assert outbound.remote_sdp == SDP_B and inbound.remote_sdp == SDP_A
    alice.bye(outbound, net.now)
    ended_b = only(net.take(bob), CallEnded)
    ended_a = only(net.take(alice), CallEnded)
    assert ended_b and ended_b[0].by_remote
    assert ended_a and not ended_a[0].by_remote
    assert alice.sessions == [] and bob.sessions == []


def test_in_dialog_requests_go_to_contact_not_to_the_aor() -> None:
    net, alice, bob = pair()
    outbound, _ = call(net, alice, bob)
    alice.bye(outbound, net.now)
    net.flush()
    bye = alice_bye = net.sent_by(alice, b"BYE ")[0]
    assert (alice_bye.target.host, alice_bye.target.port) == BOB
    request = parse_message(bye.data)
    assert str(request.uri) == "sip:bob@127.0.0.2:5080"  # Bob's Contact, not sip:bob@example.com


def test_lost_ack_is_recovered_by_2xx_retransmission() -> None:
    net, alice, bob = pair()
    acks = {"dropped": 0}

    def drop_first_ack(transmit: object) -> bool:
        data = transmit.data
        if data.startswith(b"ACK ") and acks["dropped"] == 0:
            acks["dropped"] += 1
            return True
        return False

    net.drop = drop_first_ack
    alice.invite("sip:bob@example.com", net.now, sdp=SDP_A, target=Target("udp", *BOB))
    inbound = only(net.take(bob), IncomingCall)[0].session
    bob.answer(inbound, SDP_B, net.now)
    assert only(net.take(alice), CallAnswered)
    assert inbound.state is SessionState.ANSWERED
    net.advance(0.6)
    assert inbound.state is SessionState.CONFIRMED
    assert len(net.sent_by(bob, b"SIP/2.0 200")) == 2
    assert len(net.sent_by(alice, b"ACK ")) == 2


def test_missing_ack_ends_the_call_with_bye() -> None:
    net, alice, bob = pair()
    net.drop = lambda transmit: transmit.data.startswith(b"ACK ")
    alice.invite("sip:bob@example.com", net.now, sdp=SDP_A, target=Target("udp", *BOB))
    inbound = only(net.take(bob), IncomingCall)[0].session
    bob.answer(inbound, SDP_B, net.now)
    net.advance(33.0)
    assert inbound.ended and inbound.end_reason == "no ACK for 2xx"
    retransmits = [t for t in net.sent_by(bob, b"SIP/2.0 200") if b"INVITE" in t.data]
    assert len(retransmits) >= 7  # 0.5, 1, 2, 4, 4, 4 ... until 32 s


def test_cancel_after_ringing() -> None:
    net, alice, bob = pair()
    outbound = alice.invite("sip:bob@example.com", net.now, sdp=SDP_A,
                            target=Target("udp", *BOB))
    inbound = only(net.take(bob), IncomingCall)[0].session
    bob.ring(inbound, net.now)
    assert only(net.take(alice), CallProgress)
    alice.cancel(outbound, net.now)
    ended = only(net.take(bob), CallEnded)
    assert ended and ended[0].reason == "cancelled"
    failed = only(net.take(alice), CallFailed)
    assert failed and failed[0].status == 487


def test_cancel_before_any_provisional_waits_for_one() -> None:
    net, alice, bob = pair()
    net.drop = lambda transmit: transmit.data.startswith(b"SIP/2.0 100")
    outbound = alice.invite("sip:bob@example.com", net.now, sdp=SDP_A,
                            target=Target("udp", *BOB))
    inbound = only(net.take(bob), IncomingCall)[0].session
    alice.cancel(outbound, net.now)
    assert net.sent_by(alice, b"CANCEL ") == []
    bob.ring(inbound, net.now)
    net.flush()
    assert len(net.sent_by(alice, b"CANCEL ")) == 1
    assert only(net.take(alice), CallFailed)


def test_refer_is_tracked_through_notify_to_a_final_status() -> None:
    net, alice, bob = pair()
    outbound, inbound = call(net, alice, bob)
    refer = alice.refer(outbound, "<sip:carol@127.0.0.3>", net.now,
                        referred_by="<sip:ai@127.0.0.1>")
    requests = only(net.take(bob), RequestInDialog)
    assert requests and requests[0].request.method == "REFER"
    got = requests[0].request
    assert got.refer_to.sip_uri.user == "carol" and got.referred_by is not None
    bob.respond(requests[0].transaction, 202, net.now, session=inbound)
    assert [e.status for e in only(net.take(alice), ReferResponse)] == [202]
    for status, state in ((100, "active;expires=60"), (200, "terminated;reason=noresource")):
        bob.request(inbound, "NOTIFY", net.now, headers=[
            ("Event", f"refer;id={refer.request.cseq.seq}"), ("Subscription-State", state),
            ("Content-Type", "message/sipfrag;version=2.0")],
            body=f"SIP/2.0 {status} X\r\n".encode())
    notifies = only(net.take(alice), ReferNotify)
    assert [(n.status, n.final) for n in notifies] == [(100, False), (200, True)]
    assert refer.done and refer.progress == 200
    oks = [e for e in only(net.take(bob), InDialogResponse)]
    assert [e.response.status for e in oks] == [200, 200]


def test_a_refer_asked_for_before_the_ack_waits_for_it() -> None:
    """Sent at once, it overtook our 2xx through a proxy's parallel workers and the caller
    dropped the call: it goes out when the ACK confirms the dialog."""
    net, alice, bob = pair()
    alice.invite("sip:bob@example.com", net.now, sdp=SDP_A, target=Target("udp", *BOB))
    inbound = only(net.take(bob), IncomingCall)[0].session
    bob.answer(inbound, SDP_B, net.now)
    refer = bob.refer(inbound, "<sip:carol@127.0.0.3>", net.now)
    assert [t.data[:11] for t in bob.pop_transmissions()] == [b"SIP/2.0 200"]
    net.flush()  # the 200 went out above: Alice resends nothing yet, Bob holds the REFER
    assert not net.sent_by(bob, b"REFER ")
    net.advance(0.6)  # Bob resends the 200 (T1), Alice ACKs it, then the REFER goes
    acks, refers = net.sent_by(alice, b"ACK "), net.sent_by(bob, b"REFER ")
    assert len(acks) == 1 and len(refers) == 1
    times = {transmit.data[:4]: at for at, _, transmit in net.wire}
    assert times[b"ACK "] <= times[b"REFE"]
    request = only(net.take(alice), RequestInDialog)[0].request
    assert request.method == "REFER" and request.cseq.seq == refer.request.cseq.seq


def test_bye_for_unknown_dialog_gets_481() -> None:
    net, alice, bob = pair()
    outbound, inbound = call(net, alice, bob)
    inbound.dialog.local_tag = "forgotten"
    bob._sessions.clear()
    alice.bye(outbound, net.now)
    net.flush()
    assert net.sent_by(bob, b"SIP/2.0 481")


def test_reinvite_glare_resolves_with_491_and_retry() -> None:
    net, alice, bob = pair()
    outbound, inbound = call(net, alice, bob)
    alice.reinvite(outbound, SDP_A, net.now)
    bob.reinvite(inbound, SDP_B, net.now)
    net.flush()
    assert len(net.sent_by(alice, b"SIP/2.0 491")) == 1
    assert len(net.sent_by(bob, b"SIP/2.0 491")) == 1
    for _ in range(3):
        net.advance(2.0)
        for agent, session in ((alice, outbound), (bob, inbound)):
            for event in only(net.take(agent), RequestInDialog):
                agent.respond(event.transaction, 200, net.now, session=session,
                              body=session.local_sdp or b"")
    net.advance(5.0)
    # Alice: the call, the glared re-INVITE, its retry; Bob: the glared one and its retry.
    assert len(net.sent_by(alice, b"INVITE ")) == 3 and len(net.sent_by(bob, b"INVITE ")) == 2
    assert len(net.sent_by(alice, b"SIP/2.0 200")) == 1
    assert len(net.sent_by(bob, b"SIP/2.0 200")) == 2
    assert outbound.state is SessionState.CONFIRMED and inbound.state is SessionState.CONFIRMED


def test_untrusted_source_must_authenticate_with_digest() -> None:
    config_b = UserAgentConfig(trusted_networks=["10.0.0.0/8"], auth_users={"ai": "s3cret"})
    config_a = UserAgentConfig(credentials=[Credentials("ai", "s3cret")])
    net, alice, bob = pair(config_b, config_a)
    call(net, alice, bob)
    assert len(net.sent_by(bob, b"SIP/2.0 401")) == 1
    invites = [parse_message(t.data) for t in net.sent_by(alice, b"INVITE ")]
    assert [i.cseq.seq for i in invites] == [1, 2]
    assert "algorithm=SHA-256" in (invites[1].get("authorization") or "")


def test_wrong_password_fails_the_call_with_401() -> None:
    config_b = UserAgentConfig(trusted_networks=["10.0.0.0/8"], auth_users={"ai": "s3cret"})
    config_a = UserAgentConfig(credentials=[Credentials("ai", "wrong")])
    net, alice, bob = pair(config_b, config_a)
    alice.invite("sip:bob@example.com", net.now, sdp=SDP_A, target=Target("udp", *BOB))
    failed = only(net.take(alice), CallFailed)
    assert failed and failed[0].status == 401
    assert len(net.sent_by(bob, b"SIP/2.0 401")) == 3  # first try and two answers, all refused
    assert not only(net.take(bob), IncomingCall)


def test_untrusted_source_without_auth_config_is_forbidden() -> None:
    net, alice, _ = pair(UserAgentConfig(trusted_networks=["10.0.0.0/8"]))
    alice.invite("sip:bob@example.com", net.now, sdp=SDP_A, target=Target("udp", *BOB))
    failed = only(net.take(alice), CallFailed)
    assert failed and failed[0].status == 403


def raw_request(method: str = "OPTIONS", *, extra: str = "", cseq: str | None = None,
                from_: str = "<sip:a@127.0.0.1>;tag=1", uri: str = "sip:bob@127.0.0.2") -> bytes:
    return (
        f"{method} {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKraw{method}\r\n"
        f"From: {from_}\r\nTo: <sip:bob@127.0.0.2>\r\nCall-ID: raw-{method}\r\n"
        f"CSeq: {cseq or '1 ' + method}\r\nMax-Forwards: 70\r\n{extra}Content-Length: 0\r\n\r\n"
    ).encode()


@pytest.mark.parametrize(
    ("data", "status", "reason_part"),
    [
        (raw_request(from_="Bell, Alexander <sip:a@b>;tag=1"), 400, "display name"),
        (raw_request(cseq="1 INVITE"), 400, "CSeq method"),
        (raw_request("FOO"), 501, "Not Implemented"),
        (raw_request("SUBSCRIBE"), 405, "Method Not Allowed"),
        (raw_request("INVITE", extra="Require: 100rel, foo\r\n"), 420, "Bad Extension"),
        (raw_request(uri="http://example.com/x"), 416, "Unsupported URI Scheme"),
        (raw_request().replace(b"Content-Length: 0", b"Content-Length: 99"), 400, "Content-Length"),
        (raw_request("INVITE"), 400, "Missing Contact"),
        (raw_request("INVITE", extra="Contact: <sip:a@127.0.0.1>\r\nContent-Type: text/plain\r\n")
         .replace(b"Content-Length: 0\r\n\r\n", b"Content-Length: 2\r\n\r\nhi"), 415, ""),
        (raw_request("BYE").replace(b"To: <sip:bob@127.0.0.2>", b"To: <sip:bob@127.0.0.2>;tag=z"),
         481, ""),
    ],
)
def test_bad_requests_get_a_precise_error(data: bytes, status: int, reason_part: str) -> None:
    bob = UserAgent(UserAgentConfig(max_message_size=4000))
    bob.add_listener("udp", *BOB)
    bob.receive(data, Target("udp", *ALICE), 0.0)
    replies = [parse_message(t.data) for t in bob.pop_transmissions()]
    finals = [r for r in replies if isinstance(r, Response) and r.status >= 200]
    assert len(finals) == 1 and finals[0].status == status
    assert reason_part in finals[0].reason
    assert bob.pop_events() == []


def test_unsupported_require_lists_what_is_unsupported() -> None:
    bob = UserAgent()
    bob.add_listener("udp", *BOB)
    bob.receive(raw_request("INVITE", extra="Require: replaces, foo\r\n"),
                Target("udp", *ALICE), 0.0)
    reply = parse_message(bob.pop_transmissions()[0].data)
    assert reply.get("unsupported") == "foo"


def test_oversized_request_gets_513_and_garbage_is_counted() -> None:
    bob = UserAgent(UserAgentConfig(max_message_size=1000))
    bob.add_listener("udp", *BOB)
    big = raw_request(extra="X-Pad: " + "a" * 2000 + "\r\n")
    bob.receive(big, Target("udp", *ALICE), 0.0)
    assert parse_message(bob.pop_transmissions()[0].data).status == 513
    for junk in (b"", b"\x00\xff" * 50, b"HELLO\r\n\r\n", b"SIP/2.0 999 X\r\n\r\n"):
        bob.receive(junk, Target("udp", *ALICE), 0.0)
    assert bob.pop_transmissions() == []
    assert bob.counters.garbage_dropped == 4


def test_options_out_of_dialog_lists_capabilities() -> None:
    bob = UserAgent()
    bob.add_listener("udp", *BOB)
    bob.receive(raw_request(), Target("udp", *ALICE), 0.0)
    reply = parse_message(bob.pop_transmissions()[0].data)
    assert reply.status == 200 and "REFER" in reply.allow
    assert "replaces" in reply.supported


def test_transport_failure_fails_the_call_with_503() -> None:
    net, alice, _ = pair()
    outbound = alice.invite("sip:bob@example.com", net.now, sdp=SDP_A,
                            target=Target("tcp", "127.0.0.9", 5999))
    net.flush()
    alice.transport_error(Target("tcp", "127.0.0.9", 5999), net.now)
    failed = only(net.take(alice), CallFailed)
    assert failed and failed[0].status == 503 and failed[0].session is outbound
    assert outbound.ended


def crafted_response(invite_data: bytes, status: int, tag: str, contact_port: int) -> bytes:
    invite = parse_message(invite_data)
    headers = [(n, v) for n, v in invite.headers if n == "via"] + [
        ("From", invite.get("from") or ""), ("To", f"{invite.get('to')};tag={tag}"),
        ("Call-ID", invite.call_id), ("CSeq", str(invite.cseq)),
        ("Contact", f"<sip:fork@127.0.0.5:{contact_port}>")]
    return Response(status, headers=headers, body=SDP_B if status == 200 else b"").to_bytes()


def test_early_dialog_is_confirmed_and_a_forked_second_answer_is_hung_up() -> None:
    net, alice, _ = pair()
    outbound = alice.invite("sip:bob@example.com", net.now, sdp=SDP_A,
                            target=Target("udp", "127.0.0.5", 5060))
    net.flush()
    invite = net.outside[-1].data
    proxy = Target("udp", "127.0.0.5", 5060)
    alice.receive(crafted_response(invite, 180, "forkA", 7001), proxy, net.now)
    assert set(outbound.early_dialogs) == {"forkA"}
    early = outbound.early_dialogs["forkA"]
    alice.receive(crafted_response(invite, 200, "forkA", 7002), proxy, net.now)
    assert outbound.dialog is early and outbound.state is SessionState.CONFIRMED
    assert early.remote_target.port == 7002  # the 2xx Contact refreshes the target
    alice.receive(crafted_response(invite, 200, "forkB", 7003), proxy, net.now)
    net.flush()
    sent = [parse_message(t.data) for t in net.outside]
    to_fork_b = [m for m in sent if getattr(m, "method", "") in ("ACK", "BYE")
                 and m.to.tag == "forkB"]
    assert sorted(m.method for m in to_fork_b) == ["ACK", "BYE"]  # type: ignore[union-attr]
    assert outbound.state is SessionState.CONFIRMED and outbound.dialog.remote_tag == "forkA"


def test_challenged_refer_is_retried_with_credentials_and_keeps_its_subscription() -> None:
    net, alice, bob = pair(config_a=UserAgentConfig(credentials=[Credentials("ai", "pw")]))
    outbound, inbound = call(net, alice, bob)
    pbx = DigestServer("pbx", {"ai": "pw"})
    refer = alice.refer(outbound, "<sip:human@127.0.0.3>", net.now)
    first = only(net.take(bob), RequestInDialog)[0]
    bob.respond(first.transaction, 407, net.now, session=inbound,
                headers=[("Proxy-Authenticate", pbx.challenge(net.now))])
    second = only(net.take(bob), RequestInDialog)[0]
    assert second.request.cseq.seq == first.request.cseq.seq + 1
    answer = second.request.get("proxy-authorization") or ""
    assert pbx.verify(answer, "REFER", net.now) == (True, False)
    bob.respond(second.transaction, 202, net.now, session=inbound)
    assert [e.status for e in only(net.take(alice), ReferResponse)] == [202]
    bob.request(inbound, "NOTIFY", net.now, headers=[
        ("Event", f"refer;id={second.request.cseq.seq}"),
        ("Subscription-State", "terminated;reason=noresource"),
        ("Content-Type", "message/sipfrag")], body=b"SIP/2.0 200 OK\r\n")
    assert [(n.status, n.final) for n in only(net.take(alice), ReferNotify)] == [(200, True)]
    assert refer.done and refer.request.cseq.seq == second.request.cseq.seq


def test_options_probe_reports_the_answer_or_the_timeout() -> None:
    net, alice, _ = pair()  # Bob answers OPTIONS by himself
    probe = alice.probe("sip:bob@127.0.0.2:5080", net.now)
    net.flush()
    [answered] = only(net.take(alice), ProbeResult)
    assert answered.probe is probe and answered.status == 200 and probe.status == 200
    silent = alice.probe("sip:nobody@127.0.0.9:5099", net.now)  # nobody there to answer
    net.advance(40)  # past Timer F (64*T1)
    [timed_out] = only(net.take(alice), ProbeResult)
    assert timed_out.probe is silent and timed_out.status == 408
    with pytest.raises(ValueError, match="sip: or sips:"):
        alice.probe("tel:+15550100", net.now)


def test_invite_fails_over_to_the_next_resolved_target_on_timeout_and_503() -> None:
    """RFC 3263 §4.3: a dead first target, then one answering 503, then the one that works."""
    net, alice, bob = pair()
    busy = net.add(UserAgent(rng=random.Random(3)), "127.0.0.3", 5090)
    dead = Target("udp", "127.0.0.9", 5060)  # nobody listens there
    outbound = alice.invite("sip:bob@pbx.example", net.now, sdp=SDP_A,
                            targets=[dead, Target("udp", "127.0.0.3", 5090), Target("udp", *BOB)])
    net.advance(31.0)
    assert not net.take(busy) and len(net.outside) >= 6  # still retransmitting to the dead one
    net.advance(2.0)  # Timer B (64*T1) fires: on to the second target
    [to_busy] = [e for e in net.take(busy) if isinstance(e, IncomingCall)]
    busy.reject(to_busy.session, 503, net.now)
    net.flush()
    [incoming] = [e for e in net.take(bob) if isinstance(e, IncomingCall)]
    bob.answer(incoming.session, SDP_B, net.now)
    net.flush()
    assert only(net.take(alice), CallAnswered)[0].session is outbound
    assert alice.counters.failovers == 2 and outbound.target == Target("udp", *BOB)
    branches = {parse_message(t.data).top_via.branch for _, _, t in net.wire  # type: ignore[union-attr]
                if t.data.startswith(b"INVITE ")}
    assert len(branches) == 3  # a new transaction each time


def test_the_last_target_failing_fails_the_call() -> None:
    net, alice, _ = pair()
    outbound = alice.invite("sip:bob@pbx.example", net.now, sdp=SDP_A,
                            targets=[Target("udp", "127.0.0.9", 5060)])
    net.advance(33.0)
    [failed] = only(net.take(alice), CallFailed)
    assert failed.session is outbound and failed.status == 408


def test_destination_uri_headers_and_method_are_not_sent() -> None:
    """RFC 3261 §19.1.5: headers in a URI are not copied into the Request-URI or To."""
    net, alice, bob = pair()
    alice.invite("sip:bob@127.0.0.2:5080;method=BYE?X-Inj=1&Subject=hi", net.now, sdp=SDP_A)
    [incoming] = [e for e in net.take(bob) if isinstance(e, IncomingCall)]
    invite = incoming.session.invite
    assert str(invite.uri) == "sip:bob@127.0.0.2:5080"
    assert invite.get("x-inj") is None and invite.get("subject") is None
    assert "?" not in (invite.get("to") or "") and "method" not in (invite.get("to") or "")


def test_a_refer_accepted_without_a_subscription_is_reported_so() -> None:
    """RFC 4488: 202 with Refer-Sub: false: no NOTIFY will come, and none is waited for."""
    net, alice, bob = pair()
    outbound, inbound = call(net, alice, bob)
    refer = alice.refer(outbound, "<sip:carol@127.0.0.3>", net.now)
    [asked] = only(net.take(bob), RequestInDialog)
    bob.respond(asked.transaction, 202, net.now, session=inbound,
                headers=[("Refer-Sub", "false")])
    [accepted] = only(net.take(alice), ReferResponse)
    assert accepted.status == 202 and not accepted.subscribed and refer.done


def test_an_invite_replacing_an_unknown_dialog_gets_481() -> None:
    """RFC 3891 §3: Replaces naming a dialog we do not have."""
    net, _, bob = pair()
    data = raw_request("INVITE", extra="Contact: <sip:a@127.0.0.1:5070>\r\n"
                       "Replaces: nosuch@call;to-tag=a;from-tag=b\r\n")
    bob.receive(data, Target("udp", *ALICE), net.now)
    answers = [parse_message(t.data) for t in bob.pop_transmissions()]
    assert [m.status for m in answers if isinstance(m, Response) and m.status >= 200] == [481]
    assert not bob.sessions


def test_an_invite_with_a_replaces_that_does_not_parse_gets_400() -> None:
    """RFC 3891 §6.1: call-id, to-tag and from-tag; without them the INVITE is refused,
    not left with 100 Trying for ever."""
    net, _, bob = pair()
    data = raw_request("INVITE", extra="Contact: <sip:a@127.0.0.1:5070>\r\n"
                       "Replaces: x@y;to-tag=a\r\n")
    bob.receive(data, Target("udp", *ALICE), net.now)
    answers = [parse_message(t.data) for t in bob.pop_transmissions()]
    [final] = [m for m in answers if isinstance(m, Response) and m.status >= 200]
    assert final.status == 400 and final.reason.startswith("Bad Replaces")
    assert not bob.sessions


def test_an_invite_replacing_our_dialog_is_answered_and_the_old_one_ended_by_bye() -> None:
    """RFC 3891 §3: once the new INVITE is accepted, the replaced dialog is hung up."""
    net, alice, bob = pair()
    outbound, inbound = call(net, alice, bob)
    replaces = (f"Replaces: {outbound.call_id};to-tag={inbound.local_tag};"
                f"from-tag={outbound.local_tag}\r\n")
    data = raw_request("INVITE", extra=f"Contact: <sip:c@127.0.0.1:5070>\r\n{replaces}")
    bob.receive(data, Target("udp", *ALICE), net.now)
    [incoming] = only(net.take(bob), IncomingCall)
    assert incoming.session.replaced is inbound
    bob.answer(incoming.session, SDP_B, net.now)
    byes = [m for m in (parse_message(t.data) for t in bob.pop_transmissions())
            if isinstance(m, Request) and m.method == "BYE"]
    assert [m.call_id for m in byes] == [outbound.call_id]
    assert inbound.end_reason == "replaced (RFC 3891)" and incoming.session.replaced is None


def test_a_refer_s_final_notify_after_the_bye_is_still_taken() -> None:
    """RFC 6665 §4.5 / RFC 5057: the REFER subscription outlives the INVITE usage."""
    net, alice, bob = pair()
    outbound, inbound = call(net, alice, bob)
    refer = alice.refer(outbound, "<sip:carol@127.0.0.3>", net.now)
    [asked] = only(net.take(bob), RequestInDialog)
    bob.respond(asked.transaction, 202, net.now, session=inbound)
    bob.bye(inbound, net.now)  # the transferee hangs up the old call first ...
    assert only(net.take(alice), CallEnded)
    notify = [("Event", f"refer;id={refer.request.cseq.seq}"),
              ("Subscription-State", "terminated;reason=noresource"),
              ("Content-Type", "message/sipfrag;version=2.0")]
    inbound.state = SessionState.CONFIRMED  # bob still holds the dialog for its subscription
    bob.request(inbound, "NOTIFY", net.now, headers=notify, body=b"SIP/2.0 200 OK\r\n")
    [report] = only(net.take(alice), ReferNotify)  # ... then reports: still heard
    assert (report.status, report.final) == (200, True)
    assert [e.response.status for e in only(net.take(bob), InDialogResponse)] == [200]
    net.advance(33.0)  # after 64*T1 the dialog is gone for good
    bob.request(inbound, "NOTIFY", net.now, headers=notify, body=b"SIP/2.0 200 OK\r\n")
    assert [e.response.status for e in only(net.take(bob), InDialogResponse)] == [481]
