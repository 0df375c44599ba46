"""Warm transfers: the caller holds, the human hears a whisper, accepts, and is connected.

The whisper is espeak-ng speech played to the human's leg only; acceptance is
the human pressing 1 over SIP INFO. A decline, a hang-up during the whisper
and the caller leaving mid-consult each end the attempt cleanly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.interop.transfer_peers import (
    WAIT_FOR_BYE,
    Human,
    caller_hangs_up,
    human_hangs_up,
    human_presses,
    kinds,
    run_transfer,
)
from warmline.calls.call import Call
from warmline.transfer.handoff import Destination, Handoff

pytestmark = pytest.mark.interop


def warm(human: Human, whisper: str = "Maria, verified, billing.", accept: str = "dtmf",
         fallback: list[Destination | str] | None = None) -> Callable[[Call], Handoff]:
    def make(call: Call) -> Handoff:
        destination = Destination(human.uri, "warm", 5, whisper=whisper, accept=accept,
                                  accept_timeout=6)
        return Handoff(call.id, destination, fallback=list(fallback or []),
                       context={"intent": "billing"})
    return make


def test_the_human_hears_the_whisper_accepts_and_is_connected(tmp_path: Path) -> None:
    human = Human("human_answers.xml", {"ring_ms": "200",
                                        "tail": human_presses("1", 2500)})
    outcome = asyncio.run(run_transfer(tmp_path, caller_hangs_up(5000), warm(human), [human]))
    events = kinds(outcome.handoff)
    order = ["answered", "whispering", "whisper_done", "awaiting_acceptance",
             "accepted_by_human", "connected"]
    assert [kind for kind in events if kind in order] == order
    assert outcome.handoff.status == "completed" and outcome.legs_left == 0


def test_a_human_who_declines_sends_the_caller_back_to_the_ai(tmp_path: Path) -> None:
    human = Human("human_answers.xml", {"ring_ms": "100", "tail": human_presses("2", 2500)})
    outcome = asyncio.run(run_transfer(tmp_path, caller_hangs_up(5000),
                                       warm(human, fallback=["ai"]), [human]))
    handoff = outcome.handoff
    assert handoff.status == "failed" and handoff.reason == "the human declined (pressed 2)"
    assert "connected" not in kinds(handoff) and outcome.returned
    assert outcome.legs_left == 0  # the declined consult leg was hung up (sipp got the BYE)


def test_the_human_hanging_up_during_the_whisper_fails_over(tmp_path: Path) -> None:
    second = Human("human_answers.xml", {"ring_ms": "100", "tail": WAIT_FOR_BYE})
    first = Human("human_answers.xml", {"ring_ms": "100", "tail": human_hangs_up(600)})
    whisper = "Maria has been verified, she disputes a charge on her bill, " * 3
    outcome = asyncio.run(run_transfer(
        tmp_path, caller_hangs_up(4500),
        warm(first, whisper=whisper, accept="none",
             fallback=[Destination(second.uri, "bridge", 5)]), [first, second]))
    handoff = outcome.handoff
    failed = next(e for e in handoff.events if e.kind == "attempt_failed")
    assert failed.detail["reason"] == "the human hung up during the whisper"
    events = kinds(handoff)
    assert events.index("attempt_failed") < events.index("fallback") < events.index("connected")
    assert handoff.status == "completed" and outcome.legs_left == 0


def test_the_caller_leaving_mid_consult_hangs_up_the_human(tmp_path: Path) -> None:
    human = Human("human_answers.xml", {"ring_ms": "100", "tail": WAIT_FOR_BYE})
    outcome = asyncio.run(run_transfer(tmp_path, caller_hangs_up(1500), warm(human), [human]))
    assert outcome.handoff.status == "failed" and outcome.handoff.reason == "caller hung up"
    assert outcome.legs_left == 0


def test_attended_transfer_introduces_the_caller_in_a_three_way_then_drops_the_ai(
        tmp_path: Path) -> None:
    human = Human("human_answers.xml", {"ring_ms": "200", "tail": WAIT_FOR_BYE})

    def make(call: Call) -> Handoff:
        return Handoff(call.id, Destination(human.uri, "attended", 5,
                                            whisper="I have Maria on the line about her bill."))

    outcome = asyncio.run(run_transfer(tmp_path, caller_hangs_up(5000), make, [human]))
    events = kinds(outcome.handoff)
    order = ["answered", "three_way", "introduced", "connected"]
    assert [kind for kind in events if kind in order] == order
    introduced = next(e for e in outcome.handoff.events if e.kind == "introduced")
    three_way = next(e for e in outcome.handoff.events if e.kind == "three_way")
    assert 1.0 < introduced.at - three_way.at < 4.0  # the introduction was spoken, not skipped
    assert outcome.handoff.status == "completed" and outcome.legs_left == 0


def test_warm_transfer_connects_by_refer_with_replaces(tmp_path: Path) -> None:
    """The caller's phone calls the human with Replaces; warmline leaves the call."""
    human = Human("human_replaced.xml", calls=2)

    def make(call: Call) -> Handoff:
        return Handoff(call.id, Destination(human.uri, "warm", 5, whisper="Maria, billing.",
                                            connect="replaces"))

    outcome = asyncio.run(run_transfer(tmp_path, "", make, [human],
                                       caller="caller_replaces.xml"))
    events = kinds(outcome.handoff)
    order = ["whisper_done", "replacing", "attempt_succeeded", "completed"]
    assert [kind for kind in events if kind in order] == order
    assert outcome.handoff.reason == "connected by REFER with Replaces"
    assert outcome.legs_left == 0 and outcome.call.ended
