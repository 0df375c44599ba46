"""The callback dialler: at the promised time warmline calls the customer back.

It owns the :class:`CallbackSchedule` over the :class:`CallbackBook` and
turns it with a timer: each tick asks which promises are due
(transfer/callback_schedule.py decides, with the clock passed in), checks
each number against ``[outbound]`` (a caller's From is whatever the caller
wrote, so without that check a caller could make warmline dial a premium
number at the time of their choosing), and has the engine place the call
(``place``: announcement, then the department's humans or the AI). How each
dial and connection went comes back through :meth:`dial_ended`,
:meth:`connected` and :meth:`not_connected`; every change is written to the
book at once and recorded (``callback.dialled``, ``callback.answered``,
``callback.connected``, ``callback.failed``, ``callback.retry``), so a
restart carries on where the last run stopped and the KPIs can count the
promises kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from warmline.transfer.callback_schedule import (
    CallbackPolicy,
    CallbackProgress,
    CallbackSchedule,
    CallbackState,
    DialOutcome,
)
from warmline.transfer.callbacks import CallbackBook, ScheduledCallback

log = logging.getLogger("warmline.callbacks")
TICK_SECONDS = 1.0  # the longest a due callback waits for its dial
ANNOUNCEMENT = "Hello, this is {name} calling you back{about}, as promised."

Place = Callable[[ScheduledCallback, CallbackProgress], Awaitable[str]]  # -> the call id
Allowed = Callable[[str], "str | None"]  # a number -> why it may not be dialled, or None
Record = Callable[[str, str, dict[str, Any], "str | None"], None]  # call, kind, data, handoff


@dataclass(frozen=True)
class CallbackSettings:
    """``[callbacks]``: whether promises are dialled, how hard, and what is said first."""

    policy: CallbackPolicy = field(default_factory=CallbackPolicy)
    name: str = "the support team"  # "this is <name> calling you back"
    ring_timeout: float = 30.0

    def announcement(self, callback: ScheduledCallback) -> str:
        about = f" about {callback.intent.replace('_', ' ')}" if callback.intent else ""
        return ANNOUNCEMENT.format(name=self.name, about=about)


class CallbackDialler:
    """Dials the book's due promises through ``place``, retrying per the policy."""

    def __init__(self, book: CallbackBook, settings: CallbackSettings, allowed: Allowed,
                 place: Place, record: Record,
                 clock: Callable[[], float] = time.time) -> None:
        self.book = book
        self.settings = settings
        self.allowed = allowed
        self.place = place
        self.record = record
        self.clock = clock
        self.schedule = CallbackSchedule(settings.policy)
        self._by_key = {callback.handoff_id: callback for callback in book.promised}
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Take every open promise of the book (after a restart: where it stood) and
        start ticking."""
        now = self.clock()
        for callback in self.book.promised:
            self._take(callback, now)
        self.book.on_add = self.promised
        self._loop_task = asyncio.ensure_future(self._tick_forever())

    def promised(self, callback: ScheduledCallback) -> None:
        """A new promise (the book's ``on_add``)."""
        self._take(callback, self.clock())

    def handed_over(self, handoff_ids: list[str]) -> None:
        """Promises another node keeps now (it inherited them while our beats lapsed): not
        dialled here any more (a dial already ringing goes on; its outcome is not ours)."""
        for handoff_id in handoff_ids:
            self.schedule.progress.pop(handoff_id, None)
            self._by_key.pop(handoff_id, None)

    def tick(self) -> list[CallbackProgress]:
        """Dial what is due now; what was started (refused ones are failed at once)."""
        started = []
        for progress in self.schedule.expired(self.clock()):
            callback = self._by_key[progress.key]
            self._changed(progress, "callback.failed", progress.call_id or callback.call_id,
                          reason=progress.outcome)
        for progress in self.schedule.due(self.clock()):
            callback = self._by_key[progress.key]
            problem = self.allowed(callback.number)
            if problem is not None:
                self.schedule.refused(progress, problem)
                self._changed(progress, "callback.failed", progress.call_id or callback.call_id,
                              reason=problem)
                continue
            self.schedule.dialled(progress, None)
            self.book.update(progress)
            self._spawn(self._dial(callback, progress))
            started.append(progress)
        return started

    def dial_ended(self, key: str, call_id: str, outcome: DialOutcome,
                   status: int | None) -> None:
        progress = self.schedule.progress.get(key)
        if progress is None or progress.state is not CallbackState.DIALLING:
            return
        self.schedule.dial_ended(progress, outcome, status, self.clock())
        state = _state_of(progress)
        if state is CallbackState.CONNECTING:
            self._changed(progress, "callback.answered", call_id, sip_status=status)
        elif state is CallbackState.PENDING:
            self._changed(progress, "callback.retry", call_id, outcome=outcome.value,
                          sip_status=status, next_at=progress.next_at,
                          attempts=progress.attempts)
        else:
            self._changed(progress, "callback.failed", call_id, outcome=outcome.value,
                          sip_status=status, attempts=progress.attempts,
                          reason=f"{outcome.value} after {progress.attempts} attempt(s)")

    def connected(self, key: str, call_id: str, by: str) -> None:
        progress = self.schedule.progress.get(key)
        if progress is None or progress.state is not CallbackState.CONNECTING:
            return
        self.schedule.connected(progress)
        self._changed(progress, "callback.connected", call_id, to=by)

    def not_connected(self, key: str, call_id: str, why: str) -> None:
        progress = self.schedule.progress.get(key)
        if progress is None or progress.state is not CallbackState.CONNECTING:
            return
        self.schedule.not_connected(progress, why)
        self._changed(progress, "callback.failed", call_id, reason=why)

    async def close(self) -> None:
        tasks = [t for t in [self._loop_task, *self._tasks] if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- inside ------------------------------------------------------------------------
    def _take(self, callback: ScheduledCallback, now: float) -> None:
        self._by_key[callback.handoff_id] = callback
        progress = self.book.progress.get(callback.handoff_id)
        if progress is None:
            progress = CallbackProgress(callback.handoff_id, callback.at)
        elif progress.final:
            return
        else:
            self.schedule.resumed(progress, now)
        self.schedule.add(progress)

    async def _dial(self, callback: ScheduledCallback, progress: CallbackProgress) -> None:
        try:
            call_id = await self.place(callback, progress)
        except Exception as error:  # no route, DNS, no media port, over max_calls ...
            log.warning("callback %s: cannot dial %s: %s", callback.handoff_id,
                        callback.number, error)
            self.record(callback.call_id, "callback.dial_error", {"reason": str(error)},
                        callback.handoff_id)
            if progress.state is CallbackState.DIALLING:
                self.schedule.dial_ended(progress, DialOutcome.FAILED, None, self.clock())
                kind = "callback.retry" if _state_of(progress) is CallbackState.PENDING \
                    else "callback.failed"
                self._changed(progress, kind, callback.call_id, reason=str(error),
                              attempts=progress.attempts)
            return
        progress.call_id = call_id
        self.book.update(progress)
        self.record(call_id, "callback.dialled", {"number": callback.number,
                                                  "attempt": progress.attempts,
                                                  "promised_at": callback.at},
                    callback.handoff_id)

    def _changed(self, progress: CallbackProgress, kind: str, call_id: str,
                 **data: Any) -> None:
        self.book.update(progress)
        self.record(call_id, kind, data, progress.key)

    async def _tick_forever(self) -> None:
        while True:
            try:
                self.tick()
            except Exception:  # a bug here must not stop every later callback
                log.exception("callback dialler: tick failed")
            await asyncio.sleep(TICK_SECONDS)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _state_of(progress: CallbackProgress) -> CallbackState:
    """The state as of now (a schedule call may have just changed it)."""
    return progress.state
