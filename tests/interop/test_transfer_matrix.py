"""The rest of the transfer matrix: each mode against each way a transfer ends.

Modes x outcomes already shown elsewhere: blind (test_transfers.py), bridge
(test_bridge_transfers.py), warm, warm-Replaces and attended
(test_warm_transfers.py). Here: the same refusals and hang-ups for the
modes that dial the human themselves, blind outcomes reported by NOTIFY,
warm-Replaces meeting a caller that refuses REFER, and temporary warm.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.interop.peers import render_scenario
from tests.interop.test_sipp import FAILURE_TAIL
from tests.interop.test_transfers import run_transfer as run_blind
from tests.interop.transfer_peers import (
    WAIT_FOR_BYE,
    Human,
    caller_hangs_up,
    human_hangs_up,
    kinds,
    run_transfer,
)
from warmline.calls.call import Call
from warmline.transfer.handoff import Destination, Handoff

pytestmark = pytest.mark.interop

REFUSALS = {"busy": "486 Busy Here", "declined": "603 Decline"}


@pytest.mark.parametrize("mode", ["warm", "attended"])
@pytest.mark.parametrize("outcome", ["busy", "declined", "no answer"])
def test_dialling_modes_fail_over_to_the_ai(mode: str, outcome: str, tmp_path: Path) -> None:
    human = Human("human_rings.xml") if outcome == "no answer" else \
        Human("human_rejects.xml", {"status": REFUSALS[outcome]})

    def make(call: Call) -> Handoff:
        return Handoff(call.id, Destination(human.uri, mode, 1.0), fallback=["ai"])

    result = asyncio.run(run_transfer(tmp_path, caller_hangs_up(2200), make, [human]))
    failed = next(e for e in result.handoff.events if e.kind == "attempt_failed")
    expected = 408 if outcome == "no answer" else int(REFUSALS[outcome].split()[0])
    assert failed.detail["sip_status"] == expected
    assert failed.detail["reason"].startswith(outcome)
    assert result.returned and result.legs_left == 0
    assert "whispering" not in kinds(result.handoff)  # nobody to whisper to


def test_attended_human_hanging_up_during_the_introduction(tmp_path: Path) -> None:
    human = Human("human_answers.xml", {"ring_ms": "100", "tail": human_hangs_up(500)})

    def make(call: Call) -> Handoff:
        long_intro = "I have Maria on the line, she is calling about a disputed charge. " * 3
        return Handoff(call.id, Destination(human.uri, "attended", 5, whisper=long_intro),
                       fallback=["ai"])

    result = asyncio.run(run_transfer(tmp_path, caller_hangs_up(3000), make, [human]))
    failed = next(e for e in result.handoff.events if e.kind == "attempt_failed")
    assert failed.detail["reason"] == "the human hung up during the introduction"
    assert result.returned and result.legs_left == 0


def test_temporary_warm_transfer_returns_the_caller(tmp_path: Path) -> None:
    human = Human("human_answers.xml", {"ring_ms": "100", "tail": human_hangs_up(2500)})

    def make(call: Call) -> Handoff:
        return Handoff(call.id, Destination(human.uri, "warm", 5, whisper="Maria, billing."),
                       final=False)

    result = asyncio.run(run_transfer(tmp_path, caller_hangs_up(5000), make, [human]))
    assert "connected" in kinds(result.handoff)
    why, away = result.returned[0]
    assert why == "the human hung up" and away > 2.0
    assert result.legs_left == 0


def test_warm_replaces_with_a_caller_that_refuses_refer_bridges_instead(tmp_path: Path) -> None:
    human = Human("human_answers.xml", {"ring_ms": "100", "tail": WAIT_FOR_BYE})

    def make(call: Call) -> Handoff:
        return Handoff(call.id, Destination(human.uri, "warm", 5, whisper="Maria.",
                                            connect="replaces"))

    result = asyncio.run(run_transfer(tmp_path, "", make, [human], caller="refer_refused.xml",
                                      caller_markers={"seconds": "3500"}))
    events = kinds(result.handoff)
    assert events.index("replacing") < events.index("replaces_failed") < \
        events.index("connected")
    refused = next(e for e in result.handoff.events if e.kind == "replaces_failed")
    assert refused.detail["why"] == "REFER refused (403)"
    assert result.handoff.status == "completed" and result.legs_left == 0


@pytest.mark.parametrize("final", ["603 Decline", "408 Request Timeout"])
def test_blind_outcomes_reported_by_notify(final: str, tmp_path: Path) -> None:
    scenario = render_scenario("refer_notify_bye.xml", tmp_path, final=final, tail=FAILURE_TAIL)
    handoff, returned, legs_left = asyncio.run(run_blind(
        tmp_path, scenario, Destination("sip:human@127.0.0.1:5999", "blind", 5),
        fallback=["ai"]))
    assert handoff.status == "failed" and handoff.sip_status == int(final.split()[0])
    assert returned and not legs_left


def test_blind_to_a_caller_whose_allow_lacks_refer_is_bridged_at_once(tmp_path: Path) -> None:
    human = Human("human_answers.xml", {"ring_ms": "100", "tail": WAIT_FOR_BYE})

    def make(call: Call) -> Handoff:
        return Handoff(call.id, Destination(human.uri, "blind", 5))

    result = asyncio.run(run_transfer(
        tmp_path, caller_hangs_up(1500), make, [human],
        caller_markers={"headers": "\n      Allow: INVITE, ACK, BYE, CANCEL, OPTIONS"}))
    events = kinds(result.handoff)
    assert "accepted" not in events  # no REFER was sent
    fallback = next(e for e in result.handoff.events if e.kind == "fallback")
    assert fallback.detail["mode"] == "bridge" and "405" in fallback.detail["why"]
    assert "connected" in events and result.legs_left == 0


def test_blind_caller_hanging_up_before_the_outcome(tmp_path: Path) -> None:
    scenario = render_scenario("refer_silent.xml", tmp_path, seconds="800")
    handoff, returned, legs_left = asyncio.run(run_blind(
        tmp_path, scenario, Destination("sip:human@127.0.0.1:5999", "blind", 10)))
    assert handoff.status == "failed" and handoff.reason == "caller hung up"
    assert not returned and not legs_left


def test_attended_caller_hanging_up_while_the_human_rings(tmp_path: Path) -> None:
    ringing = Human("human_rings.xml")  # sipp requires the CANCEL warmline must send

    def make(call: Call) -> Handoff:
        return Handoff(call.id, Destination(ringing.uri, "attended", 10))

    result = asyncio.run(run_transfer(tmp_path, caller_hangs_up(700), make, [ringing]))
    assert result.handoff.status == "failed" and result.handoff.reason == "caller hung up"
    assert not result.returned and result.legs_left == 0
