"""KPIs read back from the records (for `warmline kpis` and GET /kpis)."""

from __future__ import annotations

import functools
import time
from typing import Any

from sqlalchemy import Engine

from warmline.records.kpis import REPEAT_WINDOW, compute, facts
from warmline.records.store import connect, read_call_events, read_events


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


def call_history(url: str, call_id: str) -> dict[str, Any] | None:
    """An ended call as GET /calls/{id} shows it once the engine has forgotten it, from
    its events; None when the records hold no such call."""
    events = read_call_events(_engine(url), call_id)
    started = next((e for e in events if e.kind == "call.started"), None)
    if started is None:
        return None
    ended = next((e for e in events if e.kind == "call.ended"), None)
    handoffs = list(dict.fromkeys(e.handoff_id for e in events if e.handoff_id))
    return {"id": call_id, "from": started.data.get("caller"), "state": "ended" if ended
            else "unknown", "started_at": started.at, "ended_at": ended.at if ended else None,
            "end_reason": ended.data.get("reason") if ended else None, "handoffs": handoffs,
            "events": [{"at": e.at, "kind": e.kind, "handoff_id": e.handoff_id,
                        "data": e.data} for e in events],
            "source": "records"}
