"""The trigger log and the calibration report: how often each trigger fired, and then what.

Thresholds are guesses until they meet real callers. Every firing (with its
evidence) and every handoff's outcome is appended to ``triggers.jsonl`` in
the records folder; `warmline triggers report` reads it back and shows, per
trigger, how often it fired, how many firings became handoffs, how many of
those reached a human, and what happened otherwise, so the thresholds can be
reviewed each month against what they led to. The evidence comes from
redacted turns, and each line is redacted once more as it is written.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from warmline.brain.redact import redact_value
from warmline.brain.triggers import Firing
from warmline.transfer.handoff import Handoff

LOG_NAME = "triggers.jsonl"
IDS = frozenset({"call_id", "handoff_id"})  # random hex, never anything said


class TriggerLog:
    """Appends firings and outcomes to ``folder/triggers.jsonl`` (one JSON object a line).

    The file stays open between lines (an outcome a handoff: opening it each time cost the
    event loop more than the line), each line flushed as written so a reader (``warmline
    calibration``) and a crash see it; rotate it with copytruncate, or :meth:`close` first.
    """

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOG_NAME
        self._file: TextIO | None = None

    def firing(self, call_id: str, firing: Firing) -> None:
        self._append({"kind": "firing", "call_id": call_id, "trigger": firing.trigger,
                      "turn": firing.turn, "evidence": firing.evidence})

    def outcome(self, handoff: Handoff) -> None:
        triggered = next((e for e in handoff.events if e.kind == "triggered"), None)
        kinds = [event.kind for event in handoff.events]
        self._append({"kind": "outcome", "call_id": handoff.call_id, "handoff_id": handoff.id,
                      "trigger": triggered.detail.get("trigger") if triggered else None,
                      "status": handoff.status, "reason": handoff.reason,
                      "sip_status": handoff.sip_status, "connected": "connected" in kinds,
                      "next": _what_followed(kinds)})

    def _append(self, record: dict[str, Any]) -> None:
        """One line; redacted again here, since the journal outlives every call."""
        line = json.dumps({"at": time.time(), **redact_value(record, IDS)}, default=str)
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("a", encoding="utf-8")
        self._file.write(line + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _what_followed(kinds: list[str]) -> str:
    for marker, label in (("voicemail_saved", "voicemail"), ("callback_scheduled", "callback"),
                          ("ticket_delivered", "ticket"), ("connected", "human"),
                          ("returned_to_ai", "back to the AI")):
        if marker in kinds:
            return label
    return "caller hung up" if "failed" in kinds else "other"


@dataclass
class TriggerRow:
    trigger: str
    fired: int = 0
    handoffs: int = 0
    reached_a_human: int = 0
    next: Counter[str] | None = None


def report(path: Path, since: float = 0.0) -> list[TriggerRow]:
    """Rows per trigger from a trigger log; unreadable lines are skipped, never fatal."""
    rows: dict[str, TriggerRow] = defaultdict(lambda: TriggerRow(""))
    if not path.exists():
        return []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if not isinstance(record, dict) or record.get("at", 0) < since:
            continue
        trigger = str(record.get("trigger") or "requested by the AI")
        row = rows[trigger]
        row.trigger = trigger
        if record.get("kind") == "firing":
            row.fired += 1
        elif record.get("kind") == "outcome":
            row.handoffs += 1
            row.reached_a_human += bool(record.get("connected"))
            row.next = row.next or Counter()
            row.next[str(record.get("next"))] += 1
    return sorted(rows.values(), key=lambda row: -row.fired)


def format_report(rows: list[TriggerRow]) -> str:
    if not rows:
        return "no trigger has fired yet (the log is empty)"
    lines = [f"{'trigger':22} {'fired':>6} {'handoffs':>9} {'to a human':>11}  then"]
    for row in rows:
        share = f"{row.reached_a_human / row.handoffs:.0%}" if row.handoffs else "-"
        then = ", ".join(f"{label} {count}" for label, count in (row.next or Counter())
                         .most_common())
        lines.append(f"{row.trigger:22} {row.fired:6d} {row.handoffs:9d} {share:>11}  {then}")
    return "\n".join(lines)
