"""Draining a node: stop taking new calls, let the live ones (and their transfers) finish.

What an operator does before taking a node out from behind Kamailio (a deploy,
a reboot): ``POST /admin/drain`` or SIGUSR1 (server.py). From then on the UA core
answers new INVITEs and OPTIONS probes 503 with Retry-After and a Reason
(``UserAgent.draining``): Kamailio's failure route sends the caller to the next
node at once, and its OPTIONS probing marks this one inactive, so no new call
even tries it. In-dialog requests, INVITEs with Replaces and the outbound legs
of transfers still work, so every live call ends the way it would have.

``Drain`` holds the state (an enum, not a flag: accepting, draining, drained)
and the time each step happened; it does no I/O. ``check()`` is called by the
node's loop: when nothing is live any more it moves to DRAINED and calls
``on_drained`` once (``--exit-when-drained`` stops the process there).
``resume()`` takes the node back into service before it exited.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from warmline.sip.useragent import UserAgent

log = logging.getLogger("warmline.drain")


class DrainState(enum.Enum):
    ACCEPTING = "accepting"  # new calls welcome
    DRAINING = "draining"  # new calls refused 503, live ones still up
    DRAINED = "drained"  # new calls refused 503, nothing live left


@dataclass
class Drain:
    """The drain state of one node: ``ua`` refuses new calls while not ACCEPTING.

    ``live`` counts what must finish before the node is drained (the UA's
    dialogs: callers, humans being rung, transfer legs).
    """

    ua: UserAgent
    live: Callable[[], int]
    clock: Callable[[], float]
    on_drained: Callable[[], None] | None = None
    state: DrainState = DrainState.ACCEPTING
    since: float | None = None  # when the drain started
    drained_at: float | None = None
    _why: str = field(default="", repr=False)

    def start(self, why: str) -> bool:
        """Stop taking new calls; False if already draining (nothing changes)."""
        if self.state is not DrainState.ACCEPTING:
            return False
        self.state, self.since, self._why = DrainState.DRAINING, self.clock(), why
        self.ua.draining = True
        log.warning("draining (%s): new calls get 503, %d live dialog(s) finish", why,
                    self.live())
        self.check()
        return True

    def resume(self) -> bool:
        """Take new calls again; False if the node was accepting already."""
        if self.state is DrainState.ACCEPTING:
            return False
        self.state, self.since, self.drained_at = DrainState.ACCEPTING, None, None
        self.ua.draining = False
        log.warning("drain cancelled: taking new calls again")
        return True

    def check(self) -> DrainState:
        """Move DRAINING to DRAINED once nothing is live; ``on_drained`` runs once."""
        if self.state is DrainState.DRAINING and self.live() == 0:
            self.state, self.drained_at = DrainState.DRAINED, self.clock()
            log.warning("drained: no live dialog left (%s)", self._why)
            if self.on_drained is not None:
                self.on_drained()
        return self.state

    def as_dict(self) -> dict[str, object]:
        """What GET /admin/drain answers."""
        return {"state": self.state.value, "accepting": self.state is DrainState.ACCEPTING,
                "live_dialogs": self.live(), "since": self.since,
                "drained_at": self.drained_at,
                "refused": self.ua.counters.refused_draining}
