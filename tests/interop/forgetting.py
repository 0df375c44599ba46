"""Letting go of ended calls, checked after a transfer against real peers: nothing of a
call may be left as cyclic garbage (CPython frees it only in a full collection, which on a
busy node scans gigabytes and stalls the event loop past SIP's T1), and its listing and
handoffs stay for GET /calls and GET /handoffs."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from warmline.engine import CallEngine
from warmline.transfer.handoff import HandoffRecord


@asynccontextmanager
async def collector_paused() -> AsyncIterator[None]:
    """No automatic collection while a test's call runs: every reference cycle it leaves
    is still there for :func:`assert_let_go_cleanly` to find (on a busy node such a cycle
    is older than a second, so frozen, and waits for a full collection)."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@contextmanager
def _garbage_kept() -> Iterator[list[object]]:
    """The cyclic garbage that a collection at the end of the block finds (all there is
    since the last collection), kept for a look."""
    was_enabled = gc.isenabled()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    found: list[object] = []
    try:
        yield found
        gc.collect()
        found.extend(gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        if was_enabled:
            gc.enable()


def _ours(garbage: list[object]) -> list[str]:
    return sorted({type(thing).__qualname__ for thing in garbage
                   if type(thing).__module__.startswith("warmline.")})


def assert_let_go_cleanly(engine: CallEngine) -> None:
    """Let go of every ended call at once (listed for the usual time): no object of
    warmline's may be left in a reference cycle, and each call stays listed."""
    board = engine.switchboard
    ended = {call.id: list(call.handoff_ids) for call in board.calls.values() if call.ended}
    assert ended, "no ended call to let go of"
    with _garbage_kept() as garbage:
        pass  # what the call left in cycles while it ran (a failed attempt, say)
    assert not _ours(garbage), f"left in reference cycles by the call: {_ours(garbage)}"
    board.keep_whole = 0.0
    with _garbage_kept() as garbage:
        board.forget_ended_calls()
    assert not _ours(garbage), f"left in reference cycles when let go: {_ours(garbage)}"
    for call_id, handoff_ids in ended.items():
        listed = board.ended_calls[call_id]
        assert call_id not in board.calls and engine.known_call(call_id) is listed
        assert listed.as_dict()["state"] == "ended"
        assert listed.as_dict()["handoffs"] == handoff_ids
        assert all(isinstance(engine.shown_handoffs[handoff_id], HandoffRecord)
                   and handoff_id not in engine.handoffs for handoff_id in handoff_ids)
