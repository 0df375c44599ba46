"""The four triggers, table-driven: requests vs mentions, runs, recovery and flapping, rules."""

from __future__ import annotations

import pytest

from warmline.brain.triggers import (
    ComplexityRule,
    TriggerConfig,
    TriggerState,
    asks_for_a_person,
    evaluate,
    frustration_score,
)
from warmline.brain.turns import Turn


@pytest.mark.parametrize("said", [
    "agent", "Agent!", "representative please", "I want to talk to a human",
    "Can I speak to a real person?", "operator", "get me someone real",
    "I need to talk to somebody real", "transfer me to an agent", "human now",
    "let me speak with a live person please", "I'd like to speak to someone",
    "no, I want a human", "this is not working, just get me an agent",
    "Can I talk to your supervisor?",
])
def test_explicit_requests_fire(said: str) -> None:
    assert asks_for_a_person(said) is not None, said


@pytest.mark.parametrize("said", [
    "I don't need a human", "my agent said it was fine", "the agent told me yesterday",
    "no need for an operator", "I spoke to a representative before",
    "I am not asking for a person", "is this a real person or a bot?", "someone stole my card",
    "my human resources department", "", "I never wanted to talk to an agent",
    "our representative was helpful",
])
def test_mentions_and_negations_do_not(said: str) -> None:
    assert asks_for_a_person(said) is None, said


def run(config: TriggerConfig, turns: list[Turn]) -> list[tuple[int, str]]:
    state = TriggerState()
    fired = []
    for index, turn in enumerate(turns):
        fired += [(index, f.trigger) for f in evaluate(config, state, turn, index)]
    return fired


def caller(text: str = "ok", **fields: object) -> Turn:
    return Turn("caller", text, **fields)  # type: ignore[arg-type]


def test_dtmf_zero_is_an_explicit_request() -> None:
    assert run(TriggerConfig(), [caller("", dtmf="0")]) == [(0, "explicit_request")]
    assert run(TriggerConfig(), [caller("", dtmf="5")]) == []


@pytest.mark.parametrize(("confidences", "fires_at"), [
    ([0.9, 0.5, 0.4], [2]),  # two low in a row
    ([0.5, 0.9, 0.5, 0.9], []),  # never two in a row
    ([0.5, 0.5, 0.5, 0.5], [1]),  # once per run, not every turn
    ([0.5, 0.5, 0.9, 0.5, 0.5], [1, 4]),  # a new run fires again
    ([0.60, 0.60], []),  # at the threshold is not below it
])
def test_confidence_needs_consecutive_low_turns(confidences: list[float],
                                                fires_at: list[int]) -> None:
    turns = [caller("about my bill", confidence=c, intent="billing") for c in confidences]
    assert [i for i, name in run(TriggerConfig(), turns) if name == "confidence"] == fires_at


def test_confidence_threshold_per_intent() -> None:
    config = TriggerConfig(per_intent={"billing": {"confidence_threshold": 0.8,
                                                   "confidence_turns": 1}})
    turns = [caller("x", confidence=0.7, intent="billing"), caller("x", confidence=0.7,
                                                                   intent="weather")]
    assert run(config, turns) == [(0, "confidence")]


CALM = "Yes, my account number is on the letter, thank you."
ANGRY = "This is useless! I already told you three times, this is ridiculous."


@pytest.mark.parametrize(("lines", "fires_at"), [
    ([CALM, CALM, CALM], []),
    ([CALM, ANGRY, ANGRY], [2]),  # frustration builds over two turns
    ([CALM, CALM, ANGRY, CALM], []),  # one outburst does not fire
    ([ANGRY, ANGRY, ANGRY, ANGRY], [1]),  # fires once, does not flap while it stays high
    ([ANGRY, ANGRY, CALM, CALM, CALM, ANGRY], [1]),  # recovered; one outburst: no flap
    ([ANGRY, ANGRY, CALM, CALM, CALM, ANGRY, ANGRY], [1, 6]),  # a real second wave
])
def test_sentiment_with_hysteresis(lines: list[str], fires_at: list[int]) -> None:
    turns = [caller(line) for line in lines]
    assert [i for i, name in run(TriggerConfig(), turns) if name == "sentiment"] == fires_at


def test_repetition_and_loudness_count_as_frustration() -> None:
    """Polite words, but said again, louder, "I already told you": the third time fires."""
    first = caller("I want to change the address on my account", energy=1.0)
    again = "I already told you, I want to change the address on my account"
    turns = [first, caller(again, energy=2.3), caller(again, energy=2.4),
             caller(again, energy=2.5)]
    score, evidence = frustration_score(turns[1], [first.text])
    assert evidence["repetition"] == "already told you" and evidence["said_again"]
    assert evidence["energy"] == 2.3 and score >= 0.8
    assert [i for i, name in run(TriggerConfig(), turns) if name == "sentiment"] == [3]


def test_sentiment_threshold_per_call_type() -> None:
    config = TriggerConfig(per_call_type={"vip": {"frustration_threshold": 0.3}})
    mild = "This is annoying."
    assert run(config, [caller(mild, call_type="vip")] * 3) == [(2, "sentiment")]
    assert not run(config, [caller(mild)] * 6)


@pytest.mark.parametrize(("slots", "fires"), [
    ({"amount": 750}, True), ({"amount": "500.01"}, True), ({"amount": 500}, False),
    ({"amount": 20}, False), ({}, False), ({"needs": ["system_access"]}, True),
])
def test_complexity_rules(slots: dict[str, object], fires: bool) -> None:
    config = TriggerConfig(complexity=(
        ComplexityRule("refund", "refund over 500 needs a human", "amount", ">", 500),
        ComplexityRule("refund", "needs system access", needs="system_access")))
    fired = run(config, [caller("refund please", intent="refund", slots=slots)])
    assert (fired == [(0, "complexity")]) is fires


def test_ai_turns_fire_nothing_and_bad_turns_are_refused() -> None:
    assert run(TriggerConfig(), [Turn("ai", "I can get you an agent if you like")]) == []
    with pytest.raises(ValueError, match="speaker"):
        Turn("robot", "hi")
    with pytest.raises(ValueError, match="confidence"):
        Turn("caller", "hi", confidence=1.5)
