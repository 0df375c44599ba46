"""The callback schedule and dialler with a fake clock: due times, retries, limits, restarts."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time
from pathlib import Path
from typing import Any

import pytest

from warmline.transfer.callback_dialler import CallbackDialler, CallbackSettings
from warmline.transfer.callback_schedule import (
    CallbackPolicy,
    CallbackProgress,
    CallbackSchedule,
    CallbackState,
    DialOutcome,
    outcome_of,
)
from warmline.transfer.callbacks import CallbackBook, ScheduledCallback

T0 = datetime(2026, 6, 1, 12, 0, tzinfo=UTC).timestamp()  # a Monday, noon UTC


def test_outcome_of_each_final_status() -> None:
    assert outcome_of(200) is DialOutcome.ANSWERED
    assert outcome_of(486) is outcome_of(600) is DialOutcome.BUSY
    assert outcome_of(408) is outcome_of(480) is outcome_of(487) is DialOutcome.NO_ANSWER
    assert outcome_of(404) is outcome_of(503) is outcome_of(None) is DialOutcome.FAILED


def test_nothing_is_due_before_its_time_and_it_is_due_at_it() -> None:
    schedule = CallbackSchedule(CallbackPolicy())
    schedule.add(CallbackProgress("h1", T0 + 60))
    assert schedule.due(T0) == []
    assert schedule.next_wakeup() == T0 + 60
    assert [p.key for p in schedule.due(T0 + 60)] == ["h1"]


def test_busy_then_retry_after_the_interval_then_answered() -> None:
    schedule = CallbackSchedule(CallbackPolicy(attempts=3, retry_interval=300))
    progress = CallbackProgress("h1", T0)
    schedule.add(progress)
    schedule.dialled(schedule.due(T0)[0], "call-1")
    assert schedule.due(T0) == []  # in flight: not dialled twice
    schedule.dial_ended(progress, DialOutcome.BUSY, 486, T0 + 5)
    assert progress.state is CallbackState.PENDING and progress.next_at == T0 + 305
    assert schedule.due(T0 + 304) == []
    assert schedule.due(T0 + 305) == [progress]
    schedule.dialled(progress, "call-2")
    schedule.dial_ended(progress, DialOutcome.ANSWERED, 200, T0 + 310)
    assert progress.state is CallbackState.CONNECTING and progress.attempts == 2
    schedule.connected(progress)
    assert progress.state is CallbackState.KEPT and progress.final
    assert schedule.due(T0 + 10_000) == []


def test_gives_up_after_the_last_attempt() -> None:
    schedule = CallbackSchedule(CallbackPolicy(attempts=2, retry_interval=10))
    progress = CallbackProgress("h1", T0)
    schedule.add(progress)
    now = T0
    for outcome in (DialOutcome.NO_ANSWER, DialOutcome.FAILED):
        (due,) = schedule.due(now)
        schedule.dialled(due, None)
        schedule.dial_ended(due, outcome, 408, now)
        now += 10
    assert progress.state is CallbackState.FAILED and progress.outcome == "failed"
    assert progress.attempts == 2 and schedule.due(now + 1000) == []


def test_no_more_than_max_concurrent_in_flight_oldest_first() -> None:
    schedule = CallbackSchedule(CallbackPolicy(max_concurrent=2))
    for n, at in enumerate((T0 + 3, T0 + 1, T0 + 2)):
        schedule.add(CallbackProgress(f"h{n}", at))
    first = schedule.due(T0 + 10)
    assert [p.key for p in first] == ["h1", "h2"]
    for progress in first:
        schedule.dialled(progress, None)
    assert schedule.due(T0 + 10) == []
    schedule.dial_ended(first[0], DialOutcome.ANSWERED, 200, T0 + 11)  # still in flight
    assert schedule.due(T0 + 11) == []
    schedule.not_connected(first[0], "nobody took the call")
    assert [p.key for p in schedule.due(T0 + 12)] == ["h0"]


def test_quiet_hours_move_a_due_callback_to_the_next_opening() -> None:
    policy = CallbackPolicy(window=(time(9, 0), time(18, 0)), zone="Europe/Paris")
    schedule = CallbackSchedule(policy)
    late = datetime(2026, 6, 1, 20, 30, tzinfo=UTC).timestamp()  # 22:30 in Paris
    progress = CallbackProgress("h1", late)
    schedule.add(progress)
    assert schedule.due(late) == []
    opening = datetime(2026, 6, 2, 7, 0, tzinfo=UTC).timestamp()  # 09:00 Paris (CEST)
    assert progress.next_at == opening
    assert schedule.due(opening) == [progress]


def test_a_promise_long_overdue_is_failed_not_dialled() -> None:
    schedule = CallbackSchedule(CallbackPolicy(max_lateness=3600))
    stale, fresh = CallbackProgress("old", T0 - 7201), CallbackProgress("new", T0 - 60)
    schedule.add(stale)
    schedule.add(fresh)
    assert schedule.expired(T0) == [stale]
    assert stale.state is CallbackState.FAILED and "2.0 h overdue" in (stale.outcome or "")
    assert schedule.due(T0) == [fresh]


def test_policy_refuses_nonsense() -> None:
    with pytest.raises(ValueError, match=r"callbacks\.attempts"):
        CallbackPolicy(attempts=0)
    with pytest.raises(ValueError, match=r"callbacks\.hours"):
        CallbackPolicy(window=(time(18, 0), time(9, 0)))


def test_a_dial_in_flight_at_a_crash_is_tried_again_and_counted() -> None:
    schedule = CallbackSchedule(CallbackPolicy(attempts=2))
    progress = CallbackProgress("h1", T0, CallbackState.DIALLING, attempts=1)
    schedule.resumed(progress, T0 + 100)
    assert progress.state is CallbackState.PENDING and progress.next_at == T0 + 100
    last = CallbackProgress("h2", T0, CallbackState.CONNECTING, attempts=2)
    schedule.resumed(last, T0 + 100)
    assert last.state is CallbackState.FAILED and last.outcome == "interrupted"


def test_the_book_keeps_promises_and_progress_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "callbacks.jsonl"
    book = CallbackBook(path)
    book.add(ScheduledCallback("h1", "call-1", "sip:alice@127.0.0.1", T0, "busy", "billing"))
    book.add(ScheduledCallback("h2", "call-2", "sip:bob@127.0.0.1", T0, "busy"))
    book.update(CallbackProgress("h1", T0 + 300, CallbackState.PENDING, 1, "busy", 486))
    book.update(CallbackProgress("h2", T0, CallbackState.KEPT, 1, "connected"))
    with path.open("a") as torn:
        torn.write('{"handoff_id": "h3", "call_')  # a crash mid-write
    again = CallbackBook(path)
    again.load()
    assert [c.handoff_id for c in again.promised] == ["h1", "h2"]
    assert again.promised[0].intent == "billing"
    assert again.progress["h1"].attempts == 1 and again.progress["h1"].next_at == T0 + 300
    rows = {row["handoff_id"]: row for row in again.as_dicts()}
    assert rows["h2"]["state"] == "kept" and rows["h1"]["state"] == "pending"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_dialler_retries_busy_then_keeps_and_records(tmp_path: Path) -> None:
    """The live dialler over a fake clock and a fake placer: busy, retry, answered,
    connected; the book says kept after a reload; each step is recorded."""
    asyncio.run(_busy_then_kept(tmp_path))


async def _busy_then_kept(tmp_path: Path) -> None:
    clock = Clock(T0)
    book = CallbackBook(tmp_path / "callbacks.jsonl")
    records: list[tuple[str, str, dict[str, Any], str | None]] = []
    placed: list[str] = []

    async def place(callback: ScheduledCallback, progress: CallbackProgress) -> str:
        placed.append(callback.number)
        return f"call-{len(placed)}"

    settings = CallbackSettings(CallbackPolicy(attempts=3, retry_interval=60))
    dialler = CallbackDialler(book, settings, lambda number: None, place,
                              lambda *event: records.append(event), clock)
    dialler.start()
    try:
        book.add(ScheduledCallback("h1", "call-0", "sip:alice@127.0.0.1", T0 + 30, "busy",
                                   "billing"))
        assert dialler.tick() == []
        clock.now = T0 + 30
        assert len(dialler.tick()) == 1
        await asyncio.sleep(0)
        dialler.dial_ended("h1", "call-1", DialOutcome.BUSY, 486)
        clock.now += 59
        assert dialler.tick() == []
        clock.now += 1
        assert len(dialler.tick()) == 1
        await asyncio.sleep(0)
        dialler.dial_ended("h1", "call-2", DialOutcome.ANSWERED, 200)
        dialler.connected("h1", "call-2", "sip:human@127.0.0.1")
    finally:
        await dialler.close()
    kinds = [kind for _, kind, _, _ in records]
    assert kinds == ["callback.dialled", "callback.retry", "callback.dialled",
                     "callback.answered", "callback.connected"]
    assert all(handoff == "h1" for *_, handoff in records)
    assert placed == ["sip:alice@127.0.0.1"] * 2
    reloaded = CallbackBook(tmp_path / "callbacks.jsonl")
    reloaded.load()
    assert reloaded.progress["h1"].state is CallbackState.KEPT
    assert reloaded.progress["h1"].attempts == 2


def test_dialler_never_dials_a_number_the_policy_refuses(tmp_path: Path) -> None:
    asyncio.run(_refused(tmp_path))


async def _refused(tmp_path: Path) -> None:
    clock = Clock(T0)
    book = CallbackBook(tmp_path / "callbacks.jsonl")
    book.add(ScheduledCallback("h1", "call-0", "sip:+19005550100@carrier.example", T0,
                               "busy"))
    records: list[tuple[Any, ...]] = []

    async def place(callback: ScheduledCallback, progress: CallbackProgress) -> str:
        raise AssertionError("dialled a refused number")

    dialler = CallbackDialler(book, CallbackSettings(), lambda number: "not allowed", place,
                              lambda *event: records.append(event), clock)
    dialler.start()
    try:
        assert dialler.tick() == []
    finally:
        await dialler.close()
    assert [event[1] for event in records] == ["callback.failed"]
    assert book.progress["h1"].state is CallbackState.FAILED


def test_kpi_callbacks_kept_is_kept_over_promised() -> None:
    from warmline.records.kpis import compute
    from warmline.records.store import Event

    events = [Event(T0, "call-a", "call.started", {"caller": "sip:a@x"}),
              Event(T0 + 1, "call-a", "handoff.callback_scheduled", {}, "h1"),
              Event(T0 + 2, "call-b", "call.started", {"caller": "sip:b@x"}),
              Event(T0 + 3, "call-b", "handoff.callback_scheduled", {}, "h2"),
              Event(T0 + 60, "call-c", "callback.dialled", {}, "h1"),
              Event(T0 + 70, "call-c", "callback.connected", {}, "h1"),
              Event(T0 + 80, "call-d", "callback.failed", {}, "h2")]
    overall = compute(events)["overall"]
    assert (overall["callbacks_promised"], overall["callbacks_kept"],
            overall["callbacks_failed"], overall["callback_kept_share"]) == (2, 1, 1, 0.5)
    assert compute([])["overall"]["callback_kept_share"] is None


def test_a_dead_nodes_promise_is_kept_by_its_heir_and_not_by_its_next_run(
        tmp_path: Path) -> None:
    """The heir takes the row as the cluster listed it (its in-flight dial counted) and
    dials it; the dead node's next run reads that it was handed over and never dials it."""
    asyncio.run(_inherited(tmp_path))


async def _inherited(tmp_path: Path) -> None:
    dead = CallbackBook(tmp_path / "a" / "callbacks.jsonl")
    dead.add(ScheduledCallback("h1", "call-1", "sip:alice@127.0.0.1", T0, "busy", "billing"))
    dead.add(ScheduledCallback("h2", "call-2", "sip:bob@127.0.0.1", T0, "busy"))
    dead.update(CallbackProgress("h2", T0, CallbackState.KEPT, 1, "connected"))
    assert dead.open_ids() == ["h1"]
    row = {**dead.as_dicts()[0], "state": "dialling", "attempts": 1, "node": "a"}
    clock = Clock(T0 + 60)
    heir = CallbackBook(tmp_path / "b" / "callbacks.jsonl")
    placed: list[str] = []

    async def place(callback: ScheduledCallback, progress: CallbackProgress) -> str:
        placed.append(callback.number)
        return "call-9"

    dialler = CallbackDialler(heir, CallbackSettings(CallbackPolicy(attempts=3)),
                              lambda number: None, place, lambda *event: None, clock)
    dialler.start()
    try:
        heir.inherit(row, clock())
        assert dialler.tick() and heir.progress["h1"].attempts == 2  # the lost dial counted
        await asyncio.sleep(0)
        assert placed == ["sip:alice@127.0.0.1"]
    finally:
        await dialler.close()
    reloaded = CallbackBook(tmp_path / "b" / "callbacks.jsonl")
    reloaded.load()
    assert [c.intent for c in reloaded.promised] == ["billing"]  # kept by the heir for good
    dead.hand_over({"h1": "b"})
    again = CallbackBook(tmp_path / "a" / "callbacks.jsonl")
    again.load()
    assert again.open_ids() == [] and [c.handoff_id for c in again.promised] == ["h2"]
    with pytest.raises((TypeError, ValueError)):
        heir.inherit({"handoff_id": "h3", "state": "dialling"}, clock())
