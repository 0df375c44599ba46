"""The scripted agent: a caller keys 1 in the menu and the flow transfers them to billing."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.interop.transfer_peers import (
    WAIT_FOR_BYE,
    Human,
    caller_hangs_up,
    caller_presses,
    kinds,
    run_transfer,
)
from warmline.agents.scripted import ScriptedAgent, load_flow
from warmline.calls.call import Call
from warmline.engine import CallEngine

pytestmark = pytest.mark.interop


def test_a_menu_choice_transfers_the_caller(tmp_path: Path) -> None:
    billing = Human("human_answers.xml", {"ring_ms": "100", "tail": WAIT_FOR_BYE})
    flow_file = tmp_path / "menu.flow.toml"
    flow_file.write_text(f"""
start = "menu"
[steps.menu]
say = "Press 1 for billing."
gather = {{ digits = 1, timeout = 8, slot = "choice" }}
next = {{ "1" = "billing", default = "menu" }}
[steps.billing]
say = "Connecting you."
transfer = {{ to = "{billing.uri}", mode = "bridge", timeout = 5 }}
""")
    agents: list[ScriptedAgent] = []

    def configure(engine: CallEngine) -> None:
        agents.append(ScriptedAgent(engine, load_flow(flow_file)))

    def start(call: Call) -> None:
        agents[0].on_call(call)

    outcome = asyncio.run(run_transfer(
        tmp_path, caller_presses("1", 2500, caller_hangs_up(3000)), start, [billing],
        configure=configure, started_by_engine=True, let_go=False))
    assert outcome.handoff.context == {"flow_step": "billing", "choice": "1"}
    assert "connected" in kinds(outcome.handoff) and outcome.legs_left == 0
    turns = outcome.engine.brain.conversations[outcome.call.id].turns
    spoken = [turn.text for turn in turns if turn.speaker == "ai"]
    assert spoken == ["Press 1 for billing.", "Connecting you."]
    assert [t.dtmf for t in turns if t.dtmf] == ["1"]
