"""Garbage collection for a node that holds many long-lived objects and makes few cycles.

Measured on 2026-12-01 under 500 blind-transfer cycles a second, with CPython's
generational collector tuned as before (young collections every 50,000
objects, the middle generation every 20 of them):

- each young collection paused the event loop for 30-45 ms;
- each middle collection paused it for 470-510 ms;
- a full collection of the ~1M objects that 12 s of calls leave paused it for 820 ms.

The 12 s of calls are there because ended calls stay listed for ``[limits]
keep_ended_calls``. A pause over SIP's T1 (500 ms) becomes retransmissions
from every peer, and the full pause grows with the heap: 120 s of ended
calls at that rate is ~9M objects. Those collections found 0-7 garbage
objects each. The engine's objects die by reference counting.

So every FREEZE_SECONDS (a tenth of a second) the young generation is
collected, and what survives is frozen (``gc.freeze``). Frozen objects sit in
the permanent generation, which no collection scans again, and reference
counting still frees them. No collection ever scans more than a tenth of a
second's survivors. What little cyclic garbage there is mostly dies young (an
exception and its traceback) and is collected before the freeze.

Why a tenth (measured 2026-12-01 22:00-22:40 UTC, 300 blind-transfer cycles a
second on one process, ``bench/constant_rate.py --transfers``): a young
collection pauses the event loop while it walks the survivors, and every
INVITE that arrives meanwhile waits. Collected each second, ~76k survivors
took 15 ms in the first minute and 40 ms by the fifth (the walk slows as the
heap ages: 0.2 -> 0.5 us an object), and the INVITE->200 p99 followed: 40-48
ms from the second minute on. Each 0.25 s: 8-12 ms; each 0.1 s: 4-8 ms, for
the same CPU (every survivor is walked once whichever the period; a shorter
one walks a few that would have died first).

What this cannot collect is a cycle among objects older than that. A
forgotten call used to be one (~100 objects: its transfer run, attempt and
control, its relay leg and RTCP session, closures over it); the switchboard
now unties those when it forgets the call (Switchboard._let_go), and a
census under 300 cycles/s finds no cyclic garbage left. Whatever else turns
up is collected when the node is idle: no live call at
IDLE_CHECKS checks in a row, IDLE_CHECK_SECONDS apart. Everything is then
unfrozen, collected and frozen again. At that point the heap is small, with
no live calls and the listed ended calls mostly gone. A node that is never
idle collects the same way once the frozen objects have grown fourfold since
the last full collection (BUSY_GROWTH), so memory stays bounded.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Callable

log = logging.getLogger("warmline.heap")

FREEZE_SECONDS = 0.1  # a young collection's pause is a tenth of a second's survivors
IDLE_CHECK_SECONDS = 60.0
IDLE_CHECKS = 3  # idle for three checks in a row (2-3 minutes) before a full collection
YOUNG_THRESHOLD = 50_000  # objects between automatic young collections within a period
# a node never idle still collects once its frozen objects have grown fourfold since the last
# full collection: memory stays bounded whatever leaks into cycles, for one long pause per
# fourfold growth (at 300 cycles/s sustained: 2.4M -> ~8M objects, a pause of seconds every
# few minutes; at tens of calls a second, tens of minutes apart)
BUSY_GROWTH = 4.0


class HeapKeeper:
    """Collects the young generation and freezes the survivors every FREEZE_SECONDS; a full
    collection only when ``live_calls()`` has been 0 for IDLE_CHECKS checks in a row."""

    def __init__(self, live_calls: Callable[[], int]) -> None:
        self.live_calls = live_calls
        self.full_collections = 0  # the idle ones, since start
        self.cycles_collected = 0  # objects those found unreachable (cycles frozen before)
        self._idle_checks = 0
        self._frozen_after_full = 0
        self._handles: list[asyncio.TimerHandle] = []
        self._thresholds = gc.get_threshold()

    def start(self) -> None:
        self._thresholds = gc.get_threshold()
        gc.collect()
        gc.freeze()
        gc.set_threshold(YOUNG_THRESHOLD, 20, 100)
        self._frozen_after_full = gc.get_freeze_count()
        loop = asyncio.get_running_loop()
        self._handles = [loop.call_later(FREEZE_SECONDS, self._freeze_young),
                         loop.call_later(IDLE_CHECK_SECONDS, self._check_idle)]

    def stop(self) -> None:
        """The collector as it was found: a server run in-process (tests, an embedding
        application) leaves no frozen objects behind."""
        for handle in self._handles:
            handle.cancel()
        gc.unfreeze()
        gc.set_threshold(*self._thresholds)

    def _freeze_young(self) -> None:
        gc.collect(0)
        gc.freeze()
        self._handles[0] = asyncio.get_running_loop().call_later(FREEZE_SECONDS,
                                                                 self._freeze_young)

    def _check_idle(self) -> None:
        self._idle_checks = self._idle_checks + 1 if self.live_calls() == 0 else 0
        frozen = gc.get_freeze_count()  # a walk of the frozen list: ~10 ms a million
        idle = self._idle_checks >= IDLE_CHECKS and frozen > self._frozen_after_full
        if idle or frozen > BUSY_GROWTH * self._frozen_after_full:
            self.collect_all()
            self._idle_checks = 0
        self._handles[1] = asyncio.get_running_loop().call_later(IDLE_CHECK_SECONDS,
                                                                 self._check_idle)

    def collect_all(self) -> int:
        """Unfreeze, collect everything, freeze again; returns the objects collected."""
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self._frozen_after_full = gc.get_freeze_count()
        self.full_collections += 1
        self.cycles_collected += found
        if found:
            log.info("idle: a full garbage collection found %d object(s) in cycles", found)
        return found
