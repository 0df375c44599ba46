"""The context packet: what the human knows when they pick up, as a versioned JSON object.

Five things the seeds ask a human to get before the call connects: who the
caller is and what was verified (and how, never the secret), what they want
(intent, confidence, a summary), how they feel (sentiment level and its
trajectory), what the AI already tried (actions and results), and the
transcript with times; plus why the AI escalated (trigger and evidence),
priority and language. Every text in it is redacted (redact.py) before it
is built, so nothing downstream can leak what the caller read out; keys
pressed in a row make one transcript line that shows how many, not which,
once there are more than two (a PIN keyed in).

The summary comes from a pluggable :class:`Summarizer`; the offline default
writes it from the structured turns ("Maria, identity verified, billing
dispute, frustrated, refund lookup already tried"), which is also the
whisper a warm transfer plays to the human.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Protocol

from warmline.brain.redact import mask_keys, redact, redact_value
from warmline.brain.triggers import Firing, TriggerState
from warmline.brain.turns import Action, AuthState, Turn

SCHEMA_VERSION = "1.0"
SENTIMENT_LEVELS = ((0.75, "angry"), (0.5, "frustrated"), (0.25, "annoyed"), (0.0, "calm"))


class Summarizer(Protocol):
    def summarize(self, packet: dict[str, Any], turns: list[Turn]) -> str: ...


class StructuredSummarizer:
    """One line from the packet's fields, no model needed (the offline default)."""

    def summarize(self, packet: dict[str, Any], turns: list[Turn]) -> str:
        del turns
        parts: list[str] = []
        name = packet["caller"].get("name")
        if name:
            parts.append(str(name))
        auth = packet["authentication"]
        parts.append("identity verified" if auth["verified"] else "identity not verified")
        intent = packet["intent"]["name"]
        if intent:
            parts.append(str(intent).replace("_", " "))
        level = packet["sentiment"]["level"]
        if level != "calm":
            parts.append(level)
        tried = [a["name"].replace("_", " ") for a in packet["actions"] if a["result"] != "ok"]
        if tried:
            parts.append(f"{', '.join(tried)} already tried")
        return ", ".join(parts)


def sentiment_level(score: float) -> str:
    return next(label for floor, label in SENTIMENT_LEVELS if score >= floor)


def trajectory(history: list[float]) -> str:
    """rising, falling or steady over the last few turns."""
    if len(history) < 2:
        return "steady"
    change = history[-1] - history[max(0, len(history) - 4)]
    return "rising" if change > 0.1 else "falling" if change < -0.1 else "steady"


def build_packet(*, call_id: str, caller_number: str, turns: list[Turn],
                 state: TriggerState, firing: Firing | None, priority: str = "normal",
                 summarizer: Summarizer | None = None) -> dict[str, Any]:
    """The packet for a handoff of ``call_id`` given everything the AI reported."""
    latest_intent = next((t for t in reversed(turns) if t.intent), None)
    auth = next((t.auth for t in reversed(turns) if t.auth is not None), AuthState(False))
    slots: dict[str, Any] = {}
    for turn in turns:
        slots.update(turn.slots)
    actions = [action for turn in turns for action in turn.actions]
    language = next((t.language for t in reversed(turns) if t.language), None)
    packet: dict[str, Any] = {
        "version": SCHEMA_VERSION,
        "call_id": call_id,
        "caller": {"number": caller_number, "name": redact_value(slots.get("name"))},
        "authentication": {"verified": auth.verified, "method": redact_value(auth.method),
                           "level": auth.level},
        "intent": {"name": latest_intent.intent if latest_intent else None,
                   "confidence": latest_intent.confidence if latest_intent else None},
        "summary": "",
        "sentiment": {"level": sentiment_level(state.frustration),
                      "score": round(state.frustration, 3),
                      "trajectory": trajectory(state.frustration_history)},
        "actions": [_action(action) for action in actions],
        "slots": redact_value({key: value for key, value in slots.items() if key != "name"}),
        "transcript": _transcript(turns),
        "trigger": None if firing is None else {"name": firing.trigger,
                                                "evidence": redact_value(firing.evidence)},
        "priority": priority,
        "language": language,
    }
    packet["summary"] = redact(_summary(summarizer, packet, turns))
    return packet


def _summary(summarizer: Summarizer | None, packet: dict[str, Any], turns: list[Turn]) -> str:
    """The configured summarizer's line; if it fails, the structured one (noted in the packet)."""
    fallback = StructuredSummarizer()
    if summarizer is None:
        return fallback.summarize(packet, turns)
    try:
        return str(summarizer.summarize(packet, turns))
    except Exception as error:  # a plug-in must never block a transfer
        packet["summary_error"] = redact(f"{type(error).__name__}: {error}")[:200]
        return fallback.summarize(packet, turns)


def _action(action: Action) -> dict[str, Any]:
    return {key: redact_value(value) for key, value in asdict(action).items()}


def _transcript(turns: list[Turn]) -> list[dict[str, Any]]:
    """The lines said, redacted; keys pressed one after another make one line.

    A phone sends each key as its own turn, so a PIN or a card number keyed in
    would otherwise be spelled out line by line; as one line it shows only how
    many keys (mask_keys).
    """
    lines: list[dict[str, Any]] = []
    keyed: list[Turn] = []
    for turn in turns:
        if turn.dtmf and not turn.text and (not keyed or keyed[-1].speaker == turn.speaker):
            keyed.append(turn)
            continue
        if keyed:
            lines.append(_keys_line(keyed))
            keyed = []
        if turn.dtmf and not turn.text:
            keyed.append(turn)  # the other side's keys start a line of their own
        elif turn.text:
            lines.append(_line(turn.speaker, redact(turn.text), turn, turn))
    if keyed:
        lines.append(_keys_line(keyed))
    return lines


def _keys_line(keyed: list[Turn]) -> dict[str, Any]:
    pressed = mask_keys("".join(turn.dtmf or "" for turn in keyed))
    return _line(keyed[0].speaker, f"[pressed {pressed}]", keyed[0], keyed[-1])


def _line(speaker: str, text: str, first: Turn, last: Turn) -> dict[str, Any]:
    return {"speaker": speaker, "text": text, "started_at": first.started_at,
            "ended_at": last.ended_at}
