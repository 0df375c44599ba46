"""KPIs read back from the records (for `warmline kpis` and GET /kpis), and /metrics."""

from __future__ import annotations

import functools
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine

from warmline.records.kpis import REPEAT_WINDOW, compute, facts
from warmline.records.store import connect, read_events

if TYPE_CHECKING:
    from warmline.calls.engine import CallEngine

_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)


@functools.cache
def _engine(url: str) -> Engine:
    """One pool per database for the readers (the dashboard asks every 2 s); the tables
    are checked once, not on every request."""
    return connect(url)


def kpi_report(url: str, days: float, now: float | None = None) -> dict[str, Any]:
    """The KPIs over the last ``days`` from the database at ``url``."""
    now = now if now is not None else time.time()
    since = now - days * 86400
    engine = _engine(url)
    events = read_events(engine, since, now)
    later = [e for e in read_events(engine, now, now + REPEAT_WINDOW)
             if e.kind == "call.started"]
    return {"since": since, "until": now, **compute(events, later)}


def daily_report(url: str, days: int, intent: str | None = None,
                 now: float | None = None) -> list[dict[str, Any]]:
    """Calls and transfers per UTC day over the last ``days`` (oldest first)."""
    now = now if now is not None else time.time()
    first_day = int(now // 86400) - days + 1
    events = read_events(_engine(url), first_day * 86400, now)
    totals = {day: {"calls": 0, "transfers": 0} for day in range(first_day, first_day + days)}
    for fact in facts(events).values():
        if intent is not None and fact.intent != intent:
            continue
        day = totals.setdefault(int(fact.started_at // 86400), {"calls": 0, "transfers": 0})
        day["calls"] += 1
        day["transfers"] += fact.escalated
    return [{"day": time.strftime("%Y-%m-%d", time.gmtime(day * 86400)), **counts}
            for day, counts in sorted(totals.items())]


def metrics_text(engine: CallEngine) -> str:
    """Counters and a histogram in the Prometheus exposition format, from live state."""
    calls = list(engine.calls.values())
    handoffs = list(engine.handoffs.values())
    waits = [b.at - a.at for h in handoffs
             for a in h.events[:1] for b in h.events if b.kind == "human_first_word"]
    lines = [
        "# HELP warmline_calls Calls in the live view, by state.",
        "# TYPE warmline_calls gauge",
        *(f'warmline_calls{{state="{state}"}} {sum(c.state == state for c in calls)}'
          for state in ("ai", "transferring", "human", "ended")),
        "# HELP warmline_handoffs Handoffs in the live view, by status.",
        "# TYPE warmline_handoffs gauge",
        *(f'warmline_handoffs{{status="{status}"}} {count}'
          for status, count in sorted(Counter(h.status for h in handoffs).items())),
        "# HELP warmline_trigger_to_first_word_seconds From the request to the human's "
        "first word.",
        "# TYPE warmline_trigger_to_first_word_seconds histogram",
        *(f'warmline_trigger_to_first_word_seconds_bucket{{le="{bound}"}} '
          f"{sum(w <= bound for w in waits)}" for bound in _BUCKETS),
        f'warmline_trigger_to_first_word_seconds_bucket{{le="+Inf"}} {len(waits)}',
        f"warmline_trigger_to_first_word_seconds_sum {sum(waits):.3f}",
        f"warmline_trigger_to_first_word_seconds_count {len(waits)}",
    ]
    if engine.records is not None:
        lines += ["# HELP warmline_records_pending Events waiting for the database.",
                  "# TYPE warmline_records_pending gauge",
                  f"warmline_records_pending {engine.records.pending}"]
    return "\n".join(lines) + "\n"
