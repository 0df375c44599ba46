"""HeapKeeper: young cycles collected before the freeze, old ones when the node is idle."""

from __future__ import annotations

import asyncio
import gc
import weakref
from collections.abc import Iterator

import pytest

from warmline import heap
from warmline.heap import HeapKeeper


class Node:
    """A container that can be part of a reference cycle and be watched by a weakref."""

    def __init__(self) -> None:
        self.other: object = None


@pytest.fixture(autouse=True)
def quick_keeper(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(heap, "FREEZE_SECONDS", 0.01)
    monkeypatch.setattr(heap, "IDLE_CHECK_SECONDS", 0.03)
    thresholds = gc.get_threshold()
    yield
    gc.unfreeze()  # the rest of the test session collects as usual
    gc.set_threshold(*thresholds)
    gc.collect()


def cycle() -> weakref.ref[Node]:
    first, second = Node(), Node()
    first.other, second.other = second, first
    return weakref.ref(first)


async def keep(keeper: HeapKeeper, seconds: float) -> None:
    keeper.start()
    try:
        await asyncio.sleep(seconds)
    finally:
        keeper.stop()


def test_survivors_are_frozen_and_a_young_cycle_is_collected_first() -> None:
    kept = Node()

    async def run() -> weakref.ref[Node]:
        keeper = HeapKeeper(lambda: 1)
        keeper.start()
        try:
            await asyncio.sleep(0.02)
            young = cycle()  # garbage at once: the next tick's young collection takes it
            await asyncio.sleep(0.05)
            assert gc.is_tracked(kept) and not any(o is kept for o in gc.get_objects())
            return young
        finally:
            keeper.stop()

    young = asyncio.run(run())
    assert young() is None
    assert gc.get_freeze_count() == 0  # stopped: nothing left frozen


def test_a_cycle_frozen_before_it_became_garbage_goes_when_the_node_is_idle() -> None:
    async def run(live: int) -> tuple[HeapKeeper, weakref.ref[Node]]:
        keeper = HeapKeeper(lambda: live)
        keeper.start()
        try:
            first, second = Node(), Node()
            first.other, second.other = second, first
            old = weakref.ref(first)
            await asyncio.sleep(0.03)  # frozen while still in use
            del first, second  # now garbage, but frozen: no young collection sees it
            await asyncio.sleep(0.03 * (heap.IDLE_CHECKS + 2))
            return keeper, old
        finally:
            keeper.stop()

    busy, old = asyncio.run(run(live=1))
    assert old() is not None and busy.full_collections == 0  # never while calls are up
    gc.unfreeze()
    gc.collect()
    idle, old = asyncio.run(run(live=0))
    assert old() is None and idle.full_collections >= 1 and idle.cycles_collected >= 2


def test_a_node_never_idle_still_collects_once_its_frozen_objects_have_grown_fourfold() -> None:
    async def run() -> tuple[HeapKeeper, weakref.ref[Node]]:
        keeper = HeapKeeper(lambda: 1)  # always busy
        keeper.start()
        try:
            first, second = Node(), Node()
            first.other, second.other = second, first
            old = weakref.ref(first)
            await asyncio.sleep(0.03)  # frozen while in use
            del first, second
            ballast = [[n] for n in range(gc.get_freeze_count() * 4)]  # the heap grows fourfold
            await asyncio.sleep(0.1)
            assert len(ballast) > 0
            return keeper, old
        finally:
            keeper.stop()

    keeper, old = asyncio.run(run())
    assert old() is None and keeper.full_collections >= 1
