"""The five KPIs, per intent and per period, from the event log alone.

- transfers as a share of AI-handled calls;
- CSAT for escalated vs AI-only calls (scores ingested by API or a post-call survey);
- first-call resolution (calls reported resolved / calls with a resolution reported);
- time from trigger to the human's first spoken word, p50 and p90 (voice activity on the
  human's leg);
- repeat contact within 48 h by caller number;

and beside them, overall only, the callbacks kept: promises whose dialled callback
reached a human (or the AI) over the promises made (``handoff.callback_scheduled``).

Handoffs to another AI agent (mode agent) count as transfers like any other,
and on their own as ``agent_handoffs``, so a bot-to-bot move is not mistaken
for a human taking the call (nor hidden).

An empty period gives zeros and empty lists, never an error.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from warmline.records.store import Event

REPEAT_WINDOW = 48 * 3600.0


@dataclass
class CallFacts:
    call_id: str
    started_at: float
    caller: str = ""
    intent: str = "unknown"
    escalated: bool = False
    to_agent: bool = False  # a handoff went to another AI agent
    csat: list[int] = field(default_factory=list)
    resolved: bool | None = None
    first_word_after_trigger: list[float] = field(default_factory=list)


def facts(events: list[Event]) -> dict[str, CallFacts]:
    calls: dict[str, CallFacts] = {}
    triggered_at: dict[str, float] = {}
    for event in events:
        call = calls.get(event.call_id)
        if event.kind == "call.started":
            calls[event.call_id] = CallFacts(event.call_id, event.at,
                                             str(event.data.get("caller", "")))
            continue
        if call is None:
            continue
        if event.kind == "call.intent" and event.data.get("intent"):
            call.intent = str(event.data["intent"])
        elif event.kind == "handoff.requested":
            call.escalated = True
            call.to_agent = call.to_agent or event.data.get("mode") == "agent"
            triggered_at.setdefault(event.handoff_id or "", event.at)
        elif event.kind == "handoff.triggered":
            triggered_at[event.handoff_id or ""] = event.at  # the trigger's own moment
        elif event.kind == "handoff.human_first_word" and event.handoff_id in triggered_at:
            call.first_word_after_trigger.append(event.at - triggered_at[event.handoff_id])
        elif event.kind == "call.csat":
            call.csat.append(int(event.data["score"]))
        elif event.kind == "call.resolution":
            call.resolved = bool(event.data["resolved"])
    return calls


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


def _mean(values: list[int]) -> float | None:
    return round(statistics.fmean(values), 3) if values else None


def _percentile(values: list[float], fraction: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return round(ordered[index], 3)


def compute(events: list[Event], later_calls: list[Event] | None = None) -> dict[str, Any]:
    """KPIs overall and per intent. ``later_calls``: call.started events after the period,
    so a repeat contact at the period's end is still seen within its 48 h."""
    calls = facts(events)
    followers = [e for e in events + (later_calls or []) if e.kind == "call.started"]
    by_intent: dict[str, list[CallFacts]] = defaultdict(list)
    for call in calls.values():
        by_intent[call.intent].append(call)
    return {"overall": {**_kpis(list(calls.values()), followers), **callbacks_kept(events)},
            "by_intent": {intent: _kpis(group, followers)
                          for intent, group in sorted(by_intent.items())}}


def callbacks_kept(events: list[Event]) -> dict[str, Any]:
    """Promises made, kept (connected) and given up on, by the promise's handoff id; the
    share kept is of the promises made in the same events (None when none were)."""
    def promises(kind: str) -> set[str]:
        return {e.handoff_id or "" for e in events if e.kind == kind}

    promised = promises("handoff.callback_scheduled")
    kept, failed = promises("callback.connected"), promises("callback.failed")
    return {"callbacks_promised": len(promised), "callbacks_kept": len(kept),
            "callbacks_failed": len(failed - kept),
            "callback_kept_share": _share(len(kept & promised), len(promised))
            if promised else None}


def _kpis(calls: list[CallFacts], followers: list[Event]) -> dict[str, Any]:
    escalated = [call for call in calls if call.escalated]
    ai_only = [call for call in calls if not call.escalated]
    reported = [call for call in calls if call.resolved is not None]
    waits = [wait for call in calls for wait in call.first_word_after_trigger]
    repeats = sum(1 for call in calls if _called_again(call, followers))
    return {
        "calls": len(calls),
        "transfers": len(escalated),
        "transfer_share": _share(len(escalated), len(calls)),
        "agent_handoffs": sum(1 for call in calls if call.to_agent),
        "csat_escalated": _mean([score for call in escalated for score in call.csat]),
        "csat_ai_only": _mean([score for call in ai_only for score in call.csat]),
        # None, not 0.0, when no call's resolution was reported: no data is not 0%
        "first_call_resolution": _share(sum(1 for c in reported if c.resolved), len(reported))
        if reported else None,
        "trigger_to_first_word_p50": _percentile(waits, 0.5),
        "trigger_to_first_word_p90": _percentile(waits, 0.9),
        "repeat_contact_48h": _share(repeats, len(calls)),
    }


def _called_again(call: CallFacts, followers: list[Event]) -> bool:
    if not call.caller:
        return False
    return any(event.call_id != call.call_id and event.data.get("caller") == call.caller
               and 0 < event.at - call.started_at <= REPEAT_WINDOW for event in followers)
