"""A trigger routed by department and hours: open goes to its humans, closed to its path."""

from __future__ import annotations

import asyncio
import time as clock
from datetime import time
from pathlib import Path

import pytest

from tests.interop.transfer_peers import (
    WAIT_FOR_BYE,
    Human,
    Outcome,
    caller_hangs_up,
    caller_presses,
    kinds,
    run_transfer,
)
from warmline.brain.routing import Department, Hours, Router
from warmline.brain.turns import Turn
from warmline.calls.call import Call
from warmline.engine import CallEngine
from warmline.transfer.handoff import Destination, Handoff

pytestmark = pytest.mark.interop
EVERY_DAY = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALWAYS = Hours("UTC", {day: ((time(0), time(23, 59, 59)),) for day in EVERY_DAY})
NEVER = Hours("Europe/Berlin", {})


def routed(tmp_path: Path, router: Router, humans: list[Human], caller_tail: str) -> Outcome:
    """The caller asks for an agent on answer; the engine routes the escalation itself."""
    engines: list[CallEngine] = []

    def configure(engine: CallEngine) -> None:
        engines.append(engine)
        engine.escalation.router = router

    def escalate(call: Call) -> Handoff:
        engine = engines[0]
        engine.add_turn(call.id, Turn("caller", "I was charged twice",
                                      intent="billing_dispute", confidence=0.9))
        result = engine.add_turn(call.id, Turn("caller", "agent please"))
        assert result.handoff is not None and result.fired[0].trigger == "explicit_request"
        return result.handoff

    return asyncio.run(run_transfer(tmp_path, caller_tail, escalate, humans,
                                    configure=configure, started_by_engine=True))


def test_an_open_department_gets_the_call_in_its_order(tmp_path: Path) -> None:
    busy = Human("human_rejects.xml", {"status": "486 Busy Here"})
    second = Human("human_answers.xml", {"ring_ms": "100", "tail": WAIT_FOR_BYE})
    router = Router([
        Department("billing", (Destination(busy.uri, "bridge", 5),
                               Destination(second.uri, "bridge", 5)),
                   frozenset({"billing_dispute"}), hours=ALWAYS),
        Department("general", (Destination("sip:frontdesk@127.0.0.1:9", "bridge", 5),)),
    ], default="general")
    outcome = routed(tmp_path, router, [busy, second], caller_hangs_up(1500))
    events = kinds(outcome.handoff)
    assert events[:2] == ["requested", "triggered"] and "connected" in events
    assert outcome.handoff.packet is not None
    assert outcome.handoff.packet["intent"]["name"] == "billing_dispute"


def test_a_closed_department_runs_its_after_hours_path(tmp_path: Path) -> None:
    router = Router([Department("billing", (Destination("sip:b@127.0.0.1:9", "bridge", 5),),
                                frozenset({"billing_dispute"}), hours=NEVER,
                                after_hours="callback")], default="billing")
    asked = clock.time()
    outcome = routed(tmp_path, router, [], WAIT_FOR_BYE)
    assert kinds(outcome.handoff)[-2:] == ["callback_scheduled", "completed"]
    assert "attempt" not in kinds(outcome.handoff)  # nobody was rung after hours
    [promised] = outcome.engine.callbacks
    assert promised.handoff_id == outcome.handoff.id and promised.at >= asked


def test_the_caller_pressing_zero_escalates(tmp_path: Path) -> None:
    human = Human("human_answers.xml", {"ring_ms": "100", "tail": WAIT_FOR_BYE})

    def configure(engine: CallEngine) -> None:
        engine.escalation.destination = Destination(human.uri, "bridge", 5)

    outcome = asyncio.run(run_transfer(
        tmp_path, caller_presses("0", 500, caller_hangs_up(1500)), lambda call: None, [human],
        configure=configure, started_by_engine=True))
    triggered = next(e for e in outcome.handoff.events if e.kind == "triggered")
    assert triggered.detail["trigger"] == "explicit_request"
    assert triggered.detail["evidence"]["evidence"] == {"dtmf": "0"}
    assert "connected" in kinds(outcome.handoff) and outcome.legs_left == 0
