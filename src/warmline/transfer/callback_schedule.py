"""When to dial the callbacks promised, and what to do when a dial fails: no clock, no I/O.

A callback promised to a caller (transfer/fallbacks.py, kept in the
:class:`~warmline.transfer.callbacks.CallbackBook`) is due at its time.
This schedule says which are due *now* (given ``now``), never more than
``max_concurrent`` in flight at once and only inside the calling window
(quiet hours: nobody is rung at 3 a.m. because a promise fell then); and,
given how a dial went, whether to try again ``retry_interval`` later or give
up after ``attempts``. A customer who answered is not rung again: the
department's own chain served them (or the callback is kept).

The live dialler (transfer/redial.py) asks it on a timer; unit tests drive
it with a fake clock, so every ordering of answers and retries is checked
without a socket.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo


class DialOutcome(StrEnum):
    """How an outbound dial ended before anyone spoke (a record kind: ``call.<value>``)."""

    ANSWERED = "answered"
    NO_ANSWER = "no_answer"
    BUSY = "busy"
    FAILED = "failed"  # refused, not found, a server error, nothing could route it


def outcome_of(status: int | None) -> DialOutcome:
    """A final status of the customer's INVITE as an outcome (None: never sent)."""
    if status is not None and 200 <= status < 300:
        return DialOutcome.ANSWERED
    if status in (486, 600):
        return DialOutcome.BUSY
    if status in (408, 480, 487):
        return DialOutcome.NO_ANSWER
    return DialOutcome.FAILED


class CallbackState(StrEnum):
    PENDING = "pending"  # waiting for its time (or its next attempt)
    DIALLING = "dialling"  # the customer's phone is being rung
    CONNECTING = "connecting"  # they answered: announcement, then the department or the AI
    KEPT = "kept"  # connected to a human (or the AI): the promise was kept
    FAILED = "failed"  # out of attempts, refused by policy, or answered and nobody took it


FINAL = frozenset({CallbackState.KEPT, CallbackState.FAILED})
IN_FLIGHT = frozenset({CallbackState.DIALLING, CallbackState.CONNECTING})


@dataclass(frozen=True)
class CallbackPolicy:
    """``[callbacks]``: how hard to try, how many at once, and when calling is allowed."""

    attempts: int = 3  # dials per callback, the first included
    retry_interval: float = 300.0  # seconds after a failed dial before the next
    max_concurrent: int = 2  # callbacks in flight at once
    window: tuple[time, time] | None = None  # local hours calls may start; None: any time
    zone: str = "UTC"  # the IANA zone of ``window``
    # a promise this late is not dialled (turning dialling on must not ring every customer
    # promised a call last month; a restart after a long outage neither)
    max_lateness: float = 86_400.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError("callbacks.attempts: at least 1")
        if self.retry_interval <= 0:
            raise ValueError("callbacks.retry_interval_s: must be positive")
        if self.max_lateness <= 0:
            raise ValueError("callbacks.max_late_s: must be positive")
        if self.max_concurrent < 1:
            raise ValueError("callbacks.max_concurrent: at least 1")
        if self.window is not None and not self.window[0] < self.window[1]:
            raise ValueError("callbacks.hours: closes before it opens")
        ZoneInfo(self.zone)  # ZoneInfoNotFoundError (a KeyError) names it

    def next_allowed(self, at: float) -> float:
        """``at`` if a call may start then, else when the window next opens."""
        if self.window is None:
            return at
        zone = ZoneInfo(self.zone)
        local = datetime.fromtimestamp(at, UTC).astimezone(zone)
        start, end = self.window
        if start <= local.time() < end:
            return at
        day = local.date() if local.time() < start else local.date() + timedelta(days=1)
        return datetime.combine(day, start, tzinfo=zone).timestamp()


@dataclass
class CallbackProgress:
    """Where one promise stands; persisted with the book after every change."""

    key: str  # the promise's handoff id
    next_at: float  # Unix time of the next dial (the promised time at first)
    state: CallbackState = CallbackState.PENDING
    attempts: int = 0  # dials placed so far
    outcome: str | None = None  # the last dial's outcome, or why it failed for good
    sip_status: int | None = None
    call_id: str | None = None  # the last outbound call placed for it

    @property
    def final(self) -> bool:
        return self.state in FINAL


@dataclass
class CallbackSchedule:
    """Every promise's progress, and the rules above applied to it."""

    policy: CallbackPolicy = field(default_factory=CallbackPolicy)
    progress: dict[str, CallbackProgress] = field(default_factory=dict)

    def add(self, progress: CallbackProgress) -> None:
        self.progress[progress.key] = progress

    @property
    def in_flight(self) -> int:
        return sum(1 for p in self.progress.values() if p.state in IN_FLIGHT)

    def due(self, now: float) -> list[CallbackProgress]:
        """The pending callbacks to dial now, oldest first, within ``max_concurrent``.
        One due outside the calling window is moved to its next opening."""
        room = self.policy.max_concurrent - self.in_flight
        if room <= 0:
            return []
        ready = []
        for progress in self.progress.values():
            if progress.state is not CallbackState.PENDING or progress.next_at > now:
                continue
            allowed = self.policy.next_allowed(now)
            if allowed > now:
                progress.next_at = allowed
                continue
            ready.append(progress)
        ready.sort(key=lambda p: p.next_at)
        return ready[:room]

    def expired(self, now: float) -> list[CallbackProgress]:
        """Pending promises more than ``max_lateness`` overdue: failed now, never dialled."""
        late = [p for p in self.progress.values() if p.state is CallbackState.PENDING
                and now - p.next_at > self.policy.max_lateness]
        for progress in late:
            progress.state = CallbackState.FAILED
            progress.outcome = f"too late: {(now - progress.next_at) / 3600:.1f} h overdue"
        return late

    def next_wakeup(self) -> float | None:
        """When the earliest pending callback is due (None: nothing is pending)."""
        pending = [p.next_at for p in self.progress.values()
                   if p.state is CallbackState.PENDING]
        return min(pending) if pending else None

    def dialled(self, progress: CallbackProgress, call_id: str | None) -> None:
        progress.state = CallbackState.DIALLING
        progress.attempts += 1
        progress.call_id = call_id

    def dial_ended(self, progress: CallbackProgress, outcome: DialOutcome,
                   status: int | None, now: float) -> None:
        """The dial's outcome: connecting when answered, else a retry later or the end."""
        progress.outcome, progress.sip_status = outcome.value, status
        if outcome is DialOutcome.ANSWERED:
            progress.state = CallbackState.CONNECTING
        elif progress.attempts < self.policy.attempts:
            progress.state = CallbackState.PENDING
            progress.next_at = now + self.policy.retry_interval
        else:
            progress.state = CallbackState.FAILED

    def refused(self, progress: CallbackProgress, why: str) -> None:
        """Never to be dialled (not an allowed destination, no route): no retry helps."""
        progress.state, progress.outcome = CallbackState.FAILED, why

    def connected(self, progress: CallbackProgress) -> None:
        progress.state, progress.outcome = CallbackState.KEPT, "connected"

    def not_connected(self, progress: CallbackProgress, why: str) -> None:
        """Answered, but nobody took them (or they hung up first): the department's own
        fallback served them; the promise is not dialled again."""
        progress.state, progress.outcome = CallbackState.FAILED, why

    def resumed(self, progress: CallbackProgress, now: float) -> None:
        """After a restart: a dial that was in flight is lost; its attempt counts, and the
        next one goes now (or never, when none is left)."""
        if progress.state in IN_FLIGHT:
            if progress.attempts < self.policy.attempts:
                progress.state, progress.next_at = CallbackState.PENDING, now
            else:
                progress.state, progress.outcome = CallbackState.FAILED, "interrupted"
