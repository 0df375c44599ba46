"""RFC 3261 timer values (§17, Table 4), configurable per endpoint."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TimerSettings:
    """T1/T2/T4 and the timers derived from them, in seconds.

    Defaults are the RFC values. Tests shrink them; carriers with long RTTs
    may want a larger T1.
    """

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    def __post_init__(self) -> None:
        if not 0 < self.t1 <= self.t2:
            raise ValueError("timers: t1 must be positive and not above t2")
        if self.t4 <= 0:
            raise ValueError("timers: t4 must be positive")

    @property
    def timeout(self) -> float:
        """Timers B, F, H, J, L, M: 64*T1."""
        return 64 * self.t1

    @property
    def timer_d(self) -> float:
        """Wait in Completed for response retransmissions (at least 32 s)."""
        return max(32.0, self.timeout)
