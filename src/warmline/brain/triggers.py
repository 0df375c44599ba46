"""The four escalation triggers, evaluated on every turn, each firing with its evidence.

- *confidence*: the AI's intent confidence below a threshold (0.60) for N
  consecutive caller turns (2);
- *explicit request*: the caller asks for a person ("agent", "a human",
  "real person", "representative", "operator", "someone real" and their
  variants) or presses 0. Asked for, not mentioned: "I don't need a human"
  and "my agent said" do not fire;
- *sentiment*: a frustration score per caller turn from the words (VADER,
  offline), repetition ("I already told you", saying the same again),
  profanity and rising loudness, smoothed across turns, with hysteresis:
  it fires above the threshold and re-arms only after dropping below the
  reset level, so one outburst after recovery does not flap;
- *complexity*: per-intent rules ("refund over 500 needs a human", "needs
  system access the AI lacks").

Thresholds are configured, with overrides per intent and per call type.
The turns they see are already redacted (Turn.redacted): no trigger needs the
digits of a card or a code, and evidence is logged and journaled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Any

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from warmline.brain.redact import mask_keys
from warmline.brain.turns import Turn

_VADER = SentimentIntensityAnalyzer()

_PERSON = (r"(?:(?:a |an |the |some )?(?:real |live |actual |human )?"
           r"(?:person|human(?: being)?|agent|representative|rep|operator|somebody real|"
           r"someone real|someone|somebody|people|manager|supervisor))")
_PERSON_RE = re.compile(rf"\b{_PERSON}\b")
_STRONG_TERMS = re.compile(r"\b(?:agent|human|representative|rep|operator|real person|"
                           r"live person|actual person|someone real|somebody real|"
                           r"real human|supervisor|manager)\b")
_REQUEST_CUES = re.compile(
    r"\b(?:talk|speak|chat)(?:ing)? (?:to|with)\b|\btransfer me\b|\bconnect me\b|"
    r"\bput me (?:through|on)\b|\bget me\b|\bgive me\b|\bi (?:want|need|would like|'d like)\b|"
    r"\bi wanna\b|\bcan i (?:get|have|talk|speak)\b|\blet me (?:talk|speak)\b|"
    r"\bpass me\b|\bneed to talk\b")
_NEGATION = re.compile(r"\b(?:don't|do not|dont|no need|not|never|without|no)\b")
_POSSESSIVE = re.compile(r"\b(?:my|our|his|her|their|your)\s+(?:\w+\s+)?$")
_MENTION_AFTER = re.compile(r"^\s*(?:said|told|says|mentioned|was|were|gave|called|sent|"
                            r"promised|already|yesterday|before)\b")
_POLITE = {"please", "now", "just", "a", "an", "the", "me", "to", "i", "want", "need",
           "real", "live", "human", "being", "right", "away", "immediately", "get", "give",
           "talk", "speak", "actual", "person", "some", "one", "someone"}
_REPETITION = re.compile(r"\b(?:already told you|i (?:just )?said|i told you|how many times|"
                         r"for the (?:second|third|fourth|last) time|you're not listening|"
                         r"you are not listening|again and again|i keep (?:saying|telling))\b")
_PROFANITY = re.compile(r"\b(?:damn|damned|hell|shit|shitty|crap|crappy|fuck\w*|bloody|"
                        r"bullshit|ass|asshole|stupid|idiot\w*|useless|ridiculous)\b")


@dataclass(frozen=True)
class ComplexityRule:
    """Escalate ``intent`` when a slot compares so (``op``: > >= < <= == !=), or ``needs``."""

    intent: str
    reason: str
    slot: str | None = None
    op: str = ">"
    value: Any = None
    needs: str | None = None  # a capability named in the turn's slots["needs"]

    def matches(self, turn: Turn) -> bool:
        if turn.intent != self.intent:
            return False
        if self.needs is not None:
            needed = turn.slots.get("needs") or []
            return self.needs in (needed if isinstance(needed, list) else [needed])
        if self.slot is None or self.slot not in turn.slots:
            return False
        return _compare(turn.slots[self.slot], self.op, self.value)


def _compare(actual: Any, op: str, expected: Any) -> bool:
    try:
        left, right = float(actual), float(expected)
    except (TypeError, ValueError):
        left, right = str(actual), str(expected)  # type: ignore[assignment]
    comparisons = {">": left > right, ">=": left >= right, "<": left < right,
                   "<=": left <= right, "==": left == right, "!=": left != right}
    if op not in comparisons:
        raise ValueError(f"complexity rule: op {op!r} is not one of {', '.join(comparisons)}")
    return comparisons[op]


@dataclass(frozen=True)
class TriggerConfig:
    confidence_threshold: float = 0.60
    confidence_turns: int = 2
    explicit_request: bool = True
    frustration_threshold: float = 0.60
    frustration_reset: float = 0.35
    smoothing: float = 0.4  # weight of the newest turn in the frustration level
    complexity: tuple[ComplexityRule, ...] = ()
    per_intent: dict[str, dict[str, float]] = field(default_factory=dict)
    per_call_type: dict[str, dict[str, float]] = field(default_factory=dict)

    def for_turn(self, turn: Turn) -> TriggerConfig:
        """This config with the overrides for the turn's intent and call type applied."""
        changes: dict[str, Any] = {}
        changes.update(self.per_call_type.get(turn.call_type or "", {}))
        changes.update(self.per_intent.get(turn.intent or "", {}))
        return replace(self, **changes) if changes else self


@dataclass(frozen=True)
class Firing:
    trigger: str  # "confidence", "explicit_request", "sentiment", "complexity"
    evidence: dict[str, Any]
    turn: int  # index of the turn that fired it


@dataclass
class TriggerState:
    """What the triggers remember about one call between turns."""

    low_confidence_run: int = 0
    frustration: float = 0.0
    frustration_armed: bool = True
    frustration_history: list[float] = field(default_factory=list)
    caller_said: list[str] = field(default_factory=list)


def evaluate(config: TriggerConfig, state: TriggerState, turn: Turn, index: int) -> list[Firing]:
    """Every trigger on ``turn``; updates ``state``; returns what fired, with evidence."""
    if turn.speaker != "caller":
        return []
    config = config.for_turn(turn)
    fired = [_explicit(config, turn, index), _confidence(config, state, turn, index),
             _sentiment(config, state, turn, index), _complexity(config, turn, index)]
    state.caller_said.append(turn.text)
    return [firing for firing in fired if firing is not None]


def _confidence(config: TriggerConfig, state: TriggerState, turn: Turn,
                index: int) -> Firing | None:
    if turn.confidence is None:
        return None
    if turn.confidence >= config.confidence_threshold:
        state.low_confidence_run = 0
        return None
    state.low_confidence_run += 1
    if state.low_confidence_run != config.confidence_turns:
        return None  # fires once per run of low turns
    return Firing("confidence", {"confidence": turn.confidence,
                                 "threshold": config.confidence_threshold,
                                 "consecutive_turns": state.low_confidence_run,
                                 "intent": turn.intent}, index)


def _explicit(config: TriggerConfig, turn: Turn, index: int) -> Firing | None:
    if not config.explicit_request:
        return None
    if turn.dtmf and "0" in turn.dtmf:
        # a 0 inside a PIN keyed in at once: the evidence says how many keys, not which
        return Firing("explicit_request", {"dtmf": mask_keys(turn.dtmf)}, index)
    phrase = asks_for_a_person(turn.text)
    if phrase is None:
        return None
    return Firing("explicit_request", {"phrase": phrase, "text": turn.text}, index)


def asks_for_a_person(text: str) -> str | None:
    """The words with which ``text`` asks for a person, or None (mentions and negations)."""
    normalized = text.lower().replace("\u2019", "'")  # typographic apostrophe
    for clause in re.split(r"[.!?;,]|\bbut\b", normalized):
        clause = clause.strip()
        for match in _PERSON_RE.finditer(clause):
            phrase = match.group(0).strip()
            before, after = clause[:match.start()], clause[match.end():]
            cue = _REQUEST_CUES.search(before)
            if not _STRONG_TERMS.search(phrase) and not cue:
                continue  # "someone" alone asks only after a request cue
            if _NEGATION.search(before):
                continue  # "I don't need a human"
            if cue:
                return phrase  # "can I talk to your supervisor"
            if _POSSESSIVE.search(before) or _MENTION_AFTER.search(after):
                continue  # "my agent said", "the operator told me yesterday"
            if _bare_request(clause, phrase):
                return phrase
    return None


def _bare_request(clause: str, phrase: str) -> bool:
    """"Agent!", "representative please", "human now": the term and politeness only."""
    words = re.findall(r"[a-z']+", clause.replace(phrase, " "))
    return len(words) <= 3 and all(word in _POLITE for word in words)


def frustration_score(turn: Turn, earlier: list[str]) -> tuple[float, dict[str, Any]]:
    """0..1 for one caller turn, with what made it up."""
    text = turn.text.lower()
    compound = _VADER.polarity_scores(turn.text)["compound"] if turn.text else 0.0
    evidence: dict[str, Any] = {"vader_compound": round(compound, 3)}
    score = max(0.0, -compound)
    if turn.sentiment is not None:
        score = max(score, -turn.sentiment)
        evidence["ai_sentiment"] = turn.sentiment
    repeated = _REPETITION.search(text)
    if repeated:
        score += 0.3
        evidence["repetition"] = repeated.group(0)
    if _repeats_earlier(text, earlier):
        score += 0.2
        evidence["said_again"] = True
    swearing = _PROFANITY.findall(text)
    if swearing:
        score += 0.4
        evidence["profanity"] = sorted(set(swearing))
    if turn.energy is not None and turn.energy > 1.5:
        score += 0.3 if turn.energy > 2.0 else 0.2
        evidence["energy"] = turn.energy
    return min(score, 1.0), evidence


def _repeats_earlier(text: str, earlier: list[str]) -> bool:
    words = set(re.findall(r"[a-z']+", text))
    if len(words) < 4:
        return False
    for said in earlier[-5:]:
        other = set(re.findall(r"[a-z']+", said.lower()))
        if other and len(words & other) / len(words | other) >= 0.7:
            return True
    return False


def _sentiment(config: TriggerConfig, state: TriggerState, turn: Turn,
               index: int) -> Firing | None:
    score, evidence = frustration_score(turn, state.caller_said)
    state.frustration = config.smoothing * score + (1 - config.smoothing) * state.frustration
    state.frustration_history.append(round(state.frustration, 3))
    if not state.frustration_armed:
        if state.frustration < config.frustration_reset:
            state.frustration_armed = True  # recovered: may fire again later
        return None
    if state.frustration < config.frustration_threshold:
        return None
    state.frustration_armed = False
    return Firing("sentiment", {"level": round(state.frustration, 3), "turn_score": score,
                                "threshold": config.frustration_threshold, **evidence}, index)


def _complexity(config: TriggerConfig, turn: Turn, index: int) -> Firing | None:
    for rule in config.complexity:
        if rule.matches(turn):
            return Firing("complexity", {"intent": rule.intent, "reason": rule.reason,
                                         "slot": rule.slot,
                                         "value": turn.slots.get(rule.slot or "")}, index)
    return None
