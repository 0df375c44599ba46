"""How many new calls a second the node takes while it is behind on its SIP input.

The shell times how long a datagram waits in a UDP listener's queue
(transport/backlog.py) and reports each wait here. On and off alone does not
hold a node at its capacity: refusing everything drains the queue in a moment,
then taking everything again (at twice the capacity) fills it within a second,
and the calls taken in each such second fail. So this is additive increase,
multiplicative decrease, as TCP does with its window: the second probe in a row
over ``limit`` caps new calls at half the rate taken in the last second; while
waits stay over the limit the cap shrinks by a tenth a second; once a probe
comes back under half the limit it grows by a twentieth every half second, and
it is lifted when it is well above what callers ask for. Each listener's
probes count on their own (a quiet IPv6 listener beside a flooded IPv4 one
must not reset the count), and the cap grows only when every listener's
latest wait is short. A new INVITE beyond the cap (a token bucket) gets 503
with Retry-After, and so do its retransmissions (remembered by transaction for
64*T1: one arriving after a token came back is not a new call); OPTIONS probes
get 503 only while INVITEs are being refused, so a proxy in front moves calls
elsewhere without the node leaving rotation each time its cap is lifted.

Pure: the clock comes in with each call.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Hashable

FIRST_CUT = 0.5  # of the rate taken in the last second, when the queue first backs up
LATER_CUT = 0.9  # of the cap, at most once a second, while waits stay over the limit
GROWTH = 0.05  # of the cap, every GROWTH_EVERY seconds, once waits are under half the limit
GROWTH_EVERY = 0.5
LIFT_ABOVE = 1.2  # the cap goes when it is this far above the calls asked for a second
MIN_RATE = 10.0  # calls a second a cap never goes below (a quiet node is never shut)
MIN_BURST = 5.0  # calls at once a cap lets through
REFUSING_FOR = 1.0  # seconds OPTIONS get 503 after an INVITE was refused
REMEMBER_REFUSED = 32.0  # seconds a refused INVITE's retransmissions are refused too
MAX_REMEMBERED = 20_000  # refused INVITEs remembered at most (the oldest forgotten)


class CallAdmission:
    """New calls a second, capped while SIP input waits ``limit`` seconds or more."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.cap: float | None = None  # calls a second; None: every call is taken
        self.last_delay = 0.0
        self.refused = 0
        self._over: dict[Hashable, int] = {}  # a listener -> its probes in a row over the limit
        self._latest: dict[Hashable, float] = {}  # a listener -> its latest probe's wait
        self._refused: OrderedDict[Hashable, float] = OrderedDict()  # transaction -> until
        self._refusing_until = -math.inf
        self._changed = -math.inf  # when the cap last moved
        self._window_start = 0.0
        self._taken = self._asked = 0  # in the current window
        self.taken_rate = self.asked_rate = 0.0  # calls a second, the last full window
        self._tokens = 0.0
        self._refilled = 0.0

    @property
    def capped(self) -> bool:
        return self.cap is not None

    def refusing(self, now: float) -> bool:
        """Whether INVITEs were refused within the last REFUSING_FOR seconds."""
        return now < self._refusing_until

    def admit(self, now: float, transaction: Hashable = None) -> bool:
        """Whether a new call arriving ``now`` is taken (False: answer it 503).
        ``transaction`` (its server transaction key) lets a retransmission of a refused
        INVITE be refused again without counting as a new call."""
        if transaction is not None and self._refused:
            self._forget_refused(now)
            if transaction in self._refused:
                return False
        self._roll(now)
        self._asked += 1
        cap = self.cap
        if cap is not None:
            self._tokens = min(self._burst(), self._tokens + (now - self._refilled) * cap)
            self._refilled = now
            if self._tokens < 1.0:
                self._refuse(now, transaction)
                return False
            self._tokens -= 1.0
        self._taken += 1
        return True

    def measured(self, delay: float, now: float, listener: Hashable = None) -> None:
        """A probe waited ``delay`` seconds in ``listener``'s queue."""
        self._latest[listener] = delay
        self.last_delay = max(self._latest.values())
        self._roll(now)
        if delay >= self.limit:
            over = self._over[listener] = self._over.get(listener, 0) + 1
            if over >= 2:
                self._cut(now)
        elif delay < self.limit / 2:
            self._over[listener] = 0
            if self.last_delay < self.limit / 2:  # every listener has caught up
                self._grow(now)

    def _refuse(self, now: float, transaction: Hashable) -> None:
        self.refused += 1
        self._refusing_until = now + REFUSING_FOR
        if transaction is not None:
            self._refused[transaction] = now + REMEMBER_REFUSED
            if len(self._refused) > MAX_REMEMBERED:
                self._refused.popitem(last=False)

    def _forget_refused(self, now: float) -> None:
        while self._refused:
            transaction, until = next(iter(self._refused.items()))
            if until > now:
                return
            del self._refused[transaction]

    def _cut(self, now: float) -> None:
        if self.cap is None:  # the bucket starts full: the next few calls still pass
            self.cap = max(MIN_RATE, FIRST_CUT * max(self.taken_rate, self._taken_so_far(now)))
            self._tokens, self._refilled = self._burst(), now
        elif now - self._changed >= 1.0:
            self.cap = max(MIN_RATE, LATER_CUT * self.cap)
            self._tokens = min(self._tokens, self._burst())
        else:
            return
        self._changed = now

    def _burst(self) -> float:
        return max(MIN_BURST, (self.cap or 0.0) / 10)

    def _grow(self, now: float) -> None:
        if self.cap is None or now - self._changed < GROWTH_EVERY:
            return
        self.cap += max(1.0, GROWTH * self.cap)
        self._changed = now
        if self.cap >= LIFT_ABOVE * self.asked_rate:
            self.cap = None

    def _taken_so_far(self, now: float) -> float:
        span = now - self._window_start
        return self._taken / span if span > 0 else 0.0

    def _roll(self, now: float) -> None:
        span = now - self._window_start
        if span >= 1.0:
            self.taken_rate, self.asked_rate = self._taken / span, self._asked / span
            self._window_start, self._taken, self._asked = now, 0, 0
