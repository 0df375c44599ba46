"""Transaction state machines under a fake clock: loss, retransmission, reordering."""

from __future__ import annotations

import gc

from warmline.sip.events import (
    RequestReceived,
    ResponseReceived,
    Target,
    TransactionTimeout,
    Transmit,
)
from warmline.sip.message import Request, Response, parse_message
from warmline.sip.timers import TimerSettings
from warmline.sip.transaction import InviteServerTransaction, State, Transaction
from warmline.sip.transaction_layer import TransactionLayer
from warmline.sip.uri import parse_uri

PEER_UDP = Target("udp", "127.0.0.1", 5080)
PEER_TCP = Target("tcp", "127.0.0.1", 5080, connection=7)


def request(method: str = "INVITE", branch: str = "z9hG4bKabc", via_host: str = "127.0.0.1:5070",
            extra: tuple[tuple[str, str], ...] = ()) -> Request:
    return Request(
        method,
        parse_uri("sip:bob@127.0.0.1:5080"),
        [
            ("Via", f"SIP/2.0/UDP {via_host};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", "<sip:alice@127.0.0.1>;tag=a1"),
            ("To", "<sip:bob@127.0.0.1>"),
            ("Call-ID", "call-1"),
            ("CSeq", f"1 {method}"),
            *extra,
        ],
    )


def response_to(req: Request, status: int, to_tag: str = "b1") -> Response:
    headers = [("Via", v) for v in req.values("via")]
    headers += [("From", req.get("from") or ""), ("To", f"{req.get('to')};tag={to_tag}"),
                ("Call-ID", req.call_id), ("CSeq", str(req.cseq))]
    return Response(status, headers=headers)


def run_until(layer: TransactionLayer, end: float) -> list[tuple[float, object]]:
    """Advance the fake clock through every deadline up to ``end``."""
    seen: list[tuple[float, object]] = []
    while (deadline := layer.next_deadline()) is not None and deadline <= end:
        for event in layer.handle_timer(deadline):
            seen.append((deadline, event))
        for transmit in layer.pop_transmissions():
            seen.append((deadline, transmit))
    return seen


def send_times(seen: list[tuple[float, object]]) -> list[float]:
    return [round(t, 3) for t, item in seen if type(item).__name__ == "Transmit"]


def test_invite_client_retransmits_with_doubling_then_times_out() -> None:
    layer = TransactionLayer(TimerSettings())
    layer.send_request(request(), PEER_UDP, now=0.0)
    assert len(layer.pop_transmissions()) == 1
    seen = run_until(layer, 100.0)
    assert send_times(seen) == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]
    timeouts = [t for t, e in seen if isinstance(e, TransactionTimeout)]
    assert timeouts == [32.0]
    assert layer.transaction_count == 0


def test_invite_client_over_tcp_never_retransmits() -> None:
    layer = TransactionLayer(TimerSettings())
    layer.send_request(request(), PEER_TCP, now=0.0)
    layer.pop_transmissions()
    seen = run_until(layer, 100.0)
    assert send_times(seen) == []
    assert [t for t, e in seen if isinstance(e, TransactionTimeout)] == [32.0]


def test_non_invite_client_caps_retransmission_at_t2() -> None:
    layer = TransactionLayer(TimerSettings())
    layer.send_request(request("OPTIONS"), PEER_UDP, now=0.0)
    layer.pop_transmissions()
    seen = run_until(layer, 40.0)
    assert send_times(seen)[:6] == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]
    assert [t for t, e in seen if isinstance(e, TransactionTimeout)] == [32.0]


def test_provisional_stops_invite_retransmission_and_failure_is_acked() -> None:
    layer = TransactionLayer(TimerSettings())
    invite = request()
    transaction = layer.send_request(invite, PEER_UDP, now=0.0)
    layer.pop_transmissions()
    events = layer.receive_response(response_to(invite, 180), now=0.1)
    assert [type(e) for e in events] == [ResponseReceived]
    assert transaction.state is State.PROCEEDING
    assert send_times(run_until(layer, 10.0)) == []

    busy = response_to(invite, 486)
    events = layer.receive_response(busy, now=11.0)
    assert isinstance(events[0], ResponseReceived) and events[0].response.status == 486
    acks = layer.pop_transmissions()
    assert len(acks) == 1 and acks[0].data.startswith(b"ACK sip:bob@127.0.0.1:5080 SIP/2.0")
    ack = parse_message(acks[0].data)
    assert ack.to.tag == "b1" and ack.cseq.method == "ACK"
    assert ack.top_via.branch == "z9hG4bKabc"

    # The 486 is retransmitted (our ACK was lost): ACK again, but tell the TU nothing.
    assert layer.receive_response(busy, now=12.0) == []
    assert len(layer.pop_transmissions()) == 1
    run_until(layer, 11.0 + 32.0)
    assert layer.transaction_count == 0


def test_reordered_provisional_after_2xx_is_ignored() -> None:
    layer = TransactionLayer(TimerSettings())
    invite = request()
    transaction = layer.send_request(invite, PEER_UDP, now=0.0)
    ok = layer.receive_response(response_to(invite, 200), now=0.2)
    assert transaction.state is State.ACCEPTED and len(ok) == 1
    assert layer.receive_response(response_to(invite, 180), now=0.3) == []
    # A retransmitted 2xx still reaches the TU so it can ACK again (RFC 6026).
    again = layer.receive_response(response_to(invite, 200), now=0.4)
    assert len(again) == 1 and isinstance(again[0], ResponseReceived)


def test_server_invite_retransmits_failure_until_ack() -> None:
    layer = TransactionLayer(TimerSettings())
    invite = request()
    events = layer.receive_request(invite, PEER_UDP, now=0.0)
    assert isinstance(events[0], RequestReceived)
    transaction = events[0].transaction
    assert transaction is not None
    layer.respond(transaction, response_to(invite, 486), now=0.0)
    sent = [t.data[:11] for t in layer.pop_transmissions()]
    assert sent == [b"SIP/2.0 486"]  # answered at once: no 100 Trying needed
    seen = run_until(layer, 2.0)
    assert send_times(seen) == [0.5, 1.5]
    ack = request("ACK")
    assert layer.receive_request(ack, PEER_UDP, now=2.0) == []
    assert transaction.state is State.CONFIRMED
    assert send_times(run_until(layer, 60.0)) == []
    assert layer.transaction_count == 0


def test_server_invite_without_ack_times_out_after_64_t1() -> None:
    layer = TransactionLayer(TimerSettings(t1=0.1, t2=0.4))
    invite = request()
    transaction = layer.receive_request(invite, PEER_UDP, now=0.0)[0].transaction
    layer.respond(transaction, response_to(invite, 603), now=0.0)
    seen = run_until(layer, 60.0)
    assert [round(t, 3) for t, e in seen if isinstance(e, TransactionTimeout)] == [6.4]


def test_request_retransmission_gets_last_response_again() -> None:
    layer = TransactionLayer(TimerSettings())
    options = request("OPTIONS")
    transaction = layer.receive_request(options, PEER_UDP, now=0.0)[0].transaction
    assert layer.receive_request(request("OPTIONS"), PEER_UDP, now=0.1) == []
    assert layer.pop_transmissions() == []  # nothing to resend before the TU answers
    layer.respond(transaction, response_to(options, 200), now=0.2)
    first = layer.pop_transmissions()
    assert layer.receive_request(request("OPTIONS"), PEER_UDP, now=0.3) == []
    assert layer.pop_transmissions() == first


def test_an_answered_transaction_keeps_only_what_retransmissions_need() -> None:
    """After the final response the parsed request and response are let go (half of a
    call's memory for the 32 s of Timer J/L): retransmissions still match and still
    get the same bytes, the 2xx's bytes go to the UA core that resends them."""
    layer = TransactionLayer(TimerSettings())
    extra = (("Contact", "<sip:alice@127.0.0.1:5070>"), ("Subject", "x" * 200))
    invite = request(extra=extra)
    invite.body = b"v=0\r\n" * 50
    ok_invite = layer.receive_request(invite, PEER_UDP, now=0.0)[0].transaction
    assert isinstance(ok_invite, InviteServerTransaction)
    layer.respond(ok_invite, response_to(invite, 200), now=0.0)
    assert ok_invite.hand_over_2xx().startswith(b"SIP/2.0 200")
    assert ok_invite.wire is None and ok_invite.final_sent
    assert [name for name, _ in ok_invite.request.headers] == ["via", "from", "to",
                                                               "call-id", "cseq"]
    assert ok_invite.request.body == b"" and ok_invite.last_response is not None
    assert ok_invite.last_response.headers == []
    assert layer.receive_request(request(extra=extra), PEER_UDP, now=0.5) == []  # absorbed
    bye = request("BYE", branch="z9hG4bKbye", extra=extra)
    done = layer.receive_request(bye, PEER_UDP, now=1.0)[0].transaction
    assert done is not None
    layer.respond(done, response_to(bye, 200), now=1.0)
    first = layer.pop_transmissions()[-1]
    assert layer.receive_request(request("BYE", branch="z9hG4bKbye"), PEER_UDP, now=2.0) == []
    assert layer.pop_transmissions() == [first]
    run_until(layer, 40.0)
    assert layer.transaction_count == 0  # the slim copies still find their keys


def test_answered_transactions_linger_as_keys_and_bytes_the_gc_does_not_walk() -> None:
    """An answered BYE (and an INVITE's 2xx) leaves no transaction object in the layer:
    a key, its end and the bytes to resend. Retransmissions still get their answer (the
    INVITE's silently absorbed), a CANCEL after the 2xx is still known, everything goes
    at Timer J/L (64*T1), and a thousand answered requests leave nothing for the cyclic
    GC to walk once it has looked at them once."""
    gc.collect()
    before = sum(isinstance(o, Transaction) for o in gc.get_objects())
    layer = TransactionLayer(TimerSettings())
    invite = request()
    answered = layer.receive_request(invite, PEER_UDP, now=0.0)[0].transaction
    assert isinstance(answered, InviteServerTransaction)
    layer.respond(answered, response_to(invite, 200), now=0.0)
    assert answered.hand_over_2xx().startswith(b"SIP/2.0 200")  # the UA still gets it
    cancel = request("CANCEL")
    assert layer.find_invite_server(cancel) is None and layer.answered_invite(cancel)
    assert layer.receive_request(request(), PEER_UDP, now=0.3) == []  # absorbed
    for n in range(1000):
        bye = request("BYE", branch=f"z9hG4bKbye{n}")
        transaction = layer.receive_request(bye, PEER_UDP, now=1.0)[0].transaction
        assert transaction is not None
        layer.respond(transaction, response_to(bye, 200), now=1.0)
    sent = layer.pop_transmissions()
    assert len(sent) == 1001 and layer.server_count == 1001
    assert layer.holds(request("BYE", branch="z9hG4bKbye7"))
    assert layer.receive_request(request("BYE", branch="z9hG4bKbye7"), PEER_UDP, now=2.0) == []
    assert layer.pop_transmissions() == [sent[8]]  # the same bytes, to the same place
    spoofer = Target("udp", "127.0.0.9", 5999)  # a copy from elsewhere: no reflection
    assert layer.receive_request(request("BYE", branch="z9hG4bKbye7"), spoofer, now=2.0) == []
    assert layer.pop_transmissions() == [sent[8]]
    run_until(layer, 0.5)  # the INVITE's 100 Trying timer, armed at its arrival, is gone
    del answered, transaction
    gc.collect()
    assert sum(isinstance(o, Transaction) for o in gc.get_objects()) == before
    assert not any(gc.is_tracked(entry) for entry in layer._lingering.values())
    assert layer.next_deadline() == 32.0  # Timer L of the INVITE first
    run_until(layer, 32.5)
    assert not layer.answered_invite(cancel) and layer.server_count == 1000
    run_until(layer, 33.5)
    assert layer.server_count == 0 and layer.next_deadline() is None
    assert not layer.holds(request("BYE", branch="z9hG4bKbye7"))


def test_rfc2543_request_without_cookie_matches_its_retransmission() -> None:
    layer = TransactionLayer(TimerSettings())
    old = request("INVITE", branch="oldstyle")
    assert len(layer.receive_request(old, PEER_UDP, now=0.0)) == 1
    assert layer.receive_request(request("INVITE", branch="oldstyle"), PEER_UDP, now=0.5) == []


def test_responses_follow_received_and_rport() -> None:
    layer = TransactionLayer(TimerSettings())
    invite = request(via_host="10.9.9.9:5999")
    source = Target("udp", "127.0.0.5", 40000)
    transaction = layer.receive_request(invite, source, now=0.0)[0].transaction
    assert invite.top_via.received == "127.0.0.5" and invite.top_via.rport == 40000
    layer.respond(transaction, response_to(invite, 100), now=0.0)
    sent = layer.pop_transmissions()
    assert sent[0].target == Target("udp", "127.0.0.5", 40000)
    assert b"received=127.0.0.5" in sent[0].data and b"rport=40000" in sent[0].data


def test_cancel_guard_times_out_an_unanswered_invite() -> None:
    layer = TransactionLayer(TimerSettings())
    invite = request()
    transaction = layer.send_request(invite, PEER_UDP, now=0.0)
    layer.receive_response(response_to(invite, 180), now=0.1)
    layer.guard_cancel(transaction, now=5.0)
    seen = run_until(layer, 100.0)
    assert [t for t, e in seen if isinstance(e, TransactionTimeout)] == [37.0]


def test_trying_is_sent_when_the_tu_is_slow_and_repeated_on_retransmission() -> None:
    layer = TransactionLayer(TimerSettings())
    invite = request()
    transaction = layer.receive_request(invite, PEER_UDP, now=0.0)[0].transaction
    assert layer.pop_transmissions() == []
    seen = run_until(layer, 0.2)
    assert [item.data[:18] for _, item in seen if isinstance(item, Transmit)] == [
        b"SIP/2.0 100 Trying"]
    assert layer.receive_request(request(), PEER_UDP, now=0.5) == []
    assert [t.data[:11] for t in layer.pop_transmissions()] == [b"SIP/2.0 100"]
    layer.respond(transaction, response_to(invite, 180), now=0.6)
    assert layer.receive_request(request(), PEER_UDP, now=1.0) == []
    assert [t.data[:11] for t in layer.pop_transmissions()][-1] == b"SIP/2.0 180"


def test_cancelled_far_deadlines_do_not_pile_up_in_the_scheduler() -> None:
    """Session timers are cancelled when calls end; their entries must not stay for 30 min."""
    from warmline.sip.scheduler import Scheduler

    scheduler = Scheduler()
    for n in range(100_000):
        scheduler.call_at(1800.0 + n, lambda at: None).cancel()
    assert len(scheduler._heap) < 2048 and len(scheduler) == 0
