"""Bridge transfers against sipp humans: answered, busy, no answer, refused, hang-ups both ways.

sipp checks what it receives (the handoff id and the caller's identity in the
INVITE, a CANCEL at the ring timeout, a BYE when the other side left); the
tests check the handoff's events and outcome and that no relay leg is left.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.interop.peers import free_port
from tests.interop.transfer_peers import (
    WAIT_FOR_BYE,
    Human,
    caller_hangs_up,
    expect_headers,
    human_hangs_up,
    kinds,
    run_transfer,
)
from warmline.calls.call import Call, CallState
from warmline.engine import CallEngine
from warmline.transfer.handoff import CallerId, Destination, Handoff, HandoffError

pytestmark = pytest.mark.interop


def bridge(human: Human, timeout: float = 5, final: bool = True,
           fallback: list[Destination | str] | None = None) -> Callable[[Call], Handoff]:
    def make(call: Call) -> Handoff:
        return Handoff(call.id, Destination(human.uri, "bridge", timeout), final=final,
                       fallback=list(fallback or []))
    return make


def test_answered_then_the_human_hangs_up_and_the_call_ends(tmp_path: Path) -> None:
    human = Human("human_answers.xml", {"ring_ms": "300", "tail": human_hangs_up(800)})
    outcome = asyncio.run(run_transfer(tmp_path, WAIT_FOR_BYE, bridge(human), [human]))
    handoff = outcome.handoff
    assert kinds(handoff)[:2] == ["requested", "attempt"]
    assert {"ringing", "answered", "connected", "completed"} <= set(kinds(handoff))
    assert handoff.status == "completed" and handoff.reason == "the human hung up"
    assert outcome.call.ended and not outcome.returned and outcome.legs_left == 0


def test_a_bridged_call_another_node_inherited_is_let_go_without_a_word(
        tmp_path: Path) -> None:
    """Our cluster beats lapsed and another node inherited the bridged call: both dialogs
    are dropped here with nothing sent (sipp fails on a BYE it does not expect; the
    bridge's cleanup of one leg must not hang up the other, which the heir serves), and
    each phone's later BYE finds no dialog here (481: it belongs to the heir now)."""
    human = Human("human_answers.xml", {"ring_ms": "300",
                                        "tail": human_hangs_up(2500, answered=481)})
    engines: list[CallEngine] = []
    let_go: list[int] = []
    watchers: list[asyncio.Task[None]] = []

    async def let_go_once_bridged(call: Call) -> None:
        for _ in range(100):
            if call.state is CallState.HUMAN:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
        ua = engines[0].switchboard.shell.ua
        memos = [ua.memo_of(leg.session) for leg in call.legs]
        let_go.append(engines[0].switchboard.let_go(
            {memo.key: "node-b" for memo in memos if memo is not None}))

    def make(call: Call) -> Handoff:
        watchers.append(asyncio.ensure_future(let_go_once_bridged(call)))
        return bridge(human, timeout=5)(call)

    outcome = asyncio.run(run_transfer(tmp_path, caller_hangs_up(2500, answered=481), make,
                                       [human], configure=engines.append))
    assert let_go == [2]
    assert outcome.call.ended and outcome.call.taken_by == "node-b"
    assert outcome.legs_left == 0


def test_busy_goes_to_the_next_destination(tmp_path: Path) -> None:
    busy = Human("human_rejects.xml", {"status": "486 Busy Here"})
    second = Human("human_answers.xml", {"ring_ms": "100", "tail": WAIT_FOR_BYE})

    def make(call: Call) -> Handoff:
        return Handoff(call.id, Destination(busy.uri, "bridge", 5),
                       fallback=[Destination(second.uri, "bridge", 5), "ai"])

    outcome = asyncio.run(run_transfer(tmp_path, caller_hangs_up(1500), make, [busy, second]))
    handoff = outcome.handoff
    failed = next(e for e in handoff.events if e.kind == "attempt_failed")
    assert failed.detail["sip_status"] == 486 and failed.detail["to"] == busy.uri
    fallback = next(e for e in handoff.events if e.kind == "fallback")
    assert fallback.detail["to"] == second.uri
    assert kinds(handoff).index("fallback") < kinds(handoff).index("connected")
    assert handoff.status == "completed" and outcome.legs_left == 0  # the human got our BYE


def test_no_answer_is_cancelled_at_the_ring_timeout_and_the_caller_returns_to_the_ai(
        tmp_path: Path) -> None:
    ringing = Human("human_rings.xml")
    outcome = asyncio.run(run_transfer(tmp_path, caller_hangs_up(2500),
                                       bridge(ringing, timeout=1.0, fallback=["ai"]),
                                       [ringing]))
    handoff = outcome.handoff
    attempt = next(e for e in handoff.events if e.kind == "attempt")
    failed = next(e for e in handoff.events if e.kind == "attempt_failed")
    assert failed.detail["sip_status"] == 408 and "no answer within 1 s" in failed.detail["reason"]
    assert 0.95 <= failed.at - attempt.at <= 1.3  # the timeout honoured to the second
    assert handoff.status == "failed" and "returned_to_ai" in kinds(handoff)
    assert outcome.returned and outcome.legs_left == 0


@pytest.mark.parametrize("status", ["603 Decline", "404 Not Found", "503 Service Unavailable"])
def test_a_refused_call_with_no_fallback_left_still_keeps_the_caller(status: str,
                                                                       tmp_path: Path) -> None:
    refusing = Human("human_rejects.xml", {"status": status})
    outcome = asyncio.run(run_transfer(tmp_path, caller_hangs_up(1200), bridge(refusing),
                                       [refusing]))
    handoff = outcome.handoff
    assert handoff.status == "failed" and handoff.sip_status == int(status.split()[0])
    assert outcome.returned and status.split()[0] in outcome.returned[0][0]


def test_temporary_transfer_returns_the_caller_to_the_ai(tmp_path: Path) -> None:
    human = Human("human_answers.xml", {"ring_ms": "100", "tail": human_hangs_up(700)})
    outcome = asyncio.run(run_transfer(tmp_path, caller_hangs_up(2500),
                                       bridge(human, final=False), [human]))
    handoff = outcome.handoff
    assert handoff.status == "completed" and "back to the AI" in (handoff.reason or "")
    why, away = outcome.returned[0]
    assert why == "the human hung up" and 0.7 <= away < 3
    assert outcome.legs_left == 0


def test_a_group_rings_at_once_and_the_first_to_answer_takes_the_call(tmp_path: Path) -> None:
    """Simultaneous ring (the on-call staff): the phone that keeps ringing is CANCELed
    "Call completed elsewhere" the moment the other answers (checked by its sipp)."""
    beaten = Human("human_rings_elsewhere.xml")
    answering = Human("human_answers.xml", {"ring_ms": "400", "tail": WAIT_FOR_BYE})

    def make(call: Call) -> Handoff:
        return Handoff(call.id, Destination(beaten.uri, "bridge", 10,
                                            ring_with=(answering.uri,)))

    outcome = asyncio.run(run_transfer(tmp_path, caller_hangs_up(1500), make,
                                       [beaten, answering]))
    handoff = outcome.handoff
    answered = next(e for e in handoff.events if e.kind == "answered")
    assert answered.detail["by"] == answering.uri
    assert handoff.status == "completed" and "connected" in kinds(handoff)
    assert outcome.legs_left == 0


def test_the_caller_hanging_up_while_the_human_rings_cancels_the_human(tmp_path: Path) -> None:
    ringing = Human("human_rings.xml")
    outcome = asyncio.run(run_transfer(tmp_path, caller_hangs_up(600),
                                       bridge(ringing, timeout=10), [ringing]))
    handoff = outcome.handoff
    assert handoff.status == "failed" and handoff.reason == "caller hung up"
    assert not outcome.returned and outcome.legs_left == 0


def test_a_trunk_number_with_the_original_caller_carried_along(tmp_path: Path) -> None:
    checks = expect_headers(
        original=("X-Warmline-Original-Caller", "sip:caller@"),
        asserted=("P-Asserted-Identity", "sip:[+]15550100@"),
        diversion=("Diversion", "reason=unconditional;counter=1"),
        history=("History-Info", "index=1[.]1;mp=1"))
    human = Human("human_answers.xml", {"ring_ms": "100", "tail": WAIT_FOR_BYE,
                                        "from": "sip:[+]15550100@", "checks": checks})

    def make(call: Call) -> Handoff:
        return Handoff(call.id, Destination(human.uri, "bridge", 5),
                       caller_id=CallerId("trunk", "sip:+15550100@127.0.0.1", diversion=True,
                                          history_info=True))

    outcome = asyncio.run(run_transfer(tmp_path, caller_hangs_up(800), make, [human]))
    assert "connected" in kinds(outcome.handoff) and outcome.legs_left == 0


def test_caller_id_options_are_checked() -> None:
    with pytest.raises(HandoffError, match=r"caller_id\.uri"):
        CallerId("trunk")
    with pytest.raises(HandoffError, match=r"caller_id\.mode"):
        CallerId("anonymous-ish")


def test_back_to_the_ai_after_an_announcement(tmp_path: Path) -> None:
    refusing = Human("human_rejects.xml", {"status": "486 Busy Here"})
    outcome = asyncio.run(run_transfer(
        tmp_path, caller_hangs_up(6000), bridge(refusing), [refusing],
        announcement="Sorry, nobody is free. I am back."))
    events = outcome.handoff.events
    failed = next(e for e in events if e.kind == "failed")
    announced = next(e for e in events if e.kind == "announced")
    returned = next(e for e in events if e.kind == "returned_to_ai")
    assert 1.0 < announced.at - failed.at < 4.0  # spoken in full, not skipped
    assert returned.at >= announced.at and outcome.returned


def test_an_options_probe_skips_a_destination_that_is_not_there(tmp_path: Path) -> None:
    absent = Destination(f"sip:gone@127.0.0.1:{free_port()}", "bridge", 5, probe=True)
    present = Human("human_answers.xml", {"ring_ms": "100", "tail": WAIT_FOR_BYE})

    def make(call: Call) -> Handoff:
        return Handoff(call.id, absent, fallback=[Destination(present.uri, "bridge", 5)])

    outcome = asyncio.run(run_transfer(tmp_path, caller_hangs_up(3500), make, [present]))
    probed = next(e for e in outcome.handoff.events if e.kind == "probed")
    status = probed.detail["sip_status"]  # 503 at once from the ICMP error, else 408 at 2 s
    assert status in (408, 503) and probed.detail["to"] == absent.uri
    failed = next(e for e in outcome.handoff.events if e.kind == "attempt_failed")
    assert failed.detail["reason"] == f"not available: OPTIONS answered {status}"
    assert "connected" in kinds(outcome.handoff) and outcome.legs_left == 0


def test_the_caller_hears_an_announcement_before_the_transfer(tmp_path: Path) -> None:
    human = Human("human_answers.xml", {"ring_ms": "100", "tail": WAIT_FOR_BYE})

    def make(call: Call) -> Handoff:
        return Handoff(call.id, Destination(human.uri, "bridge", 5),
                       announce="Connecting you to billing now.")

    outcome = asyncio.run(run_transfer(tmp_path, caller_hangs_up(5000), make, [human]))
    events = outcome.handoff.events
    attempt = next(e for e in events if e.kind == "attempt")
    assert 1.0 < attempt.at - events[0].at < 4.0  # dialled once the announcement was said
    assert kinds(outcome.handoff).index("announced") < kinds(outcome.handoff).index("attempt")
    assert "connected" in kinds(outcome.handoff) and outcome.legs_left == 0
