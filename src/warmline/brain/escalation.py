"""Turns in, escalations out: the per-call conversation and the policy that acts on it.

Each call keeps its turns and its trigger state (:class:`Conversation`). The
policy says what a firing leads to (a destination and its fallbacks), how
the context travels (header budget, webhook, the public URL of the
screen-pop) and how it is summarised. The engine asks the conversation to
evaluate each turn and, on the first firing while the caller is with the
AI, starts a handoff carrying the packet built here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from warmline.brain.context import Summarizer, build_packet
from warmline.brain.delivery import HeaderBudget
from warmline.brain.routing import Route, Router
from warmline.brain.triggers import Firing, TriggerConfig, TriggerState, evaluate
from warmline.brain.turns import Turn
from warmline.transfer.handoff import Destination, FallbackAction, FallbackKind

URGENT_TRIGGERS = frozenset({"explicit_request", "sentiment"})


@dataclass
class EscalationPolicy:
    triggers: TriggerConfig = field(default_factory=TriggerConfig)
    destination: Destination | None = None  # None: triggers are reported, nobody is called
    fallback: list[Destination | FallbackAction | str] = field(default_factory=lambda: ["ai"])
    budget: HeaderBudget = field(default_factory=HeaderBudget)
    webhook_url: str | None = None
    webhook_secret: str = ""
    webhook_timeout: float = 2.0
    public_url: str | None = None  # http://host:port of the API, for screen-pop links
    summarizer: Summarizer | None = None
    router: Router | None = None  # departments and hours; overrides ``destination``

    def plan(self, intent: str | None, skills: set[str], now: datetime | None = None
             ) -> tuple[Destination | None, list[Destination | FallbackAction | str]]:
        """Whom to call first and what follows, by the router when there is one."""
        if self.router is None:
            return self.destination, list(self.fallback)
        return self._planned(self.router.route(intent, skills, now or datetime.now(UTC)))

    def plan_department(self, name: str, now: datetime | None = None
                        ) -> tuple[Destination | None, list[Destination | FallbackAction | str]]:
        """The same plan for the department called ``name`` (an outbound call's "then");
        KeyError when there is no such department."""
        if self.router is None:
            raise KeyError(name)
        department = self.router.by_name[name]
        return self._planned(self.router.route_to(department, now or datetime.now(UTC)))

    @property
    def department_names(self) -> list[str]:
        return [d.name for d in self.router.departments] if self.router else []

    def _planned(self, route: Route
                 ) -> tuple[Destination | None, list[Destination | FallbackAction | str]]:
        department = route.department
        last = _after_hours(department.after_hours, route.next_opening,
                            department.callback_window)
        if not route.open:
            return None, [last]
        first, *others = route.destinations
        return first, [*others, last]


def _after_hours(kind: FallbackKind, next_opening: datetime | None,
                 window: timedelta) -> FallbackAction | FallbackKind:
    """The department's no-answer/after-hours step, with the callback time it can promise."""
    if kind in (FallbackKind.AI, FallbackKind.TICKET):
        return kind
    when = (next_opening or datetime.now(UTC)) + (window if kind is FallbackKind.VOICEMAIL
                                                   else timedelta(0))
    return FallbackAction(kind, at=when.timestamp())


def turn_skills(conversation: Conversation) -> set[str]:
    """Skills the turns asked for (slots "skills" or "language")."""
    skills: set[str] = set()
    for turn in conversation.turns:
        wanted = turn.slots.get("skills")
        if isinstance(wanted, list):
            skills.update(str(skill) for skill in wanted)
        if turn.language:
            skills.add(turn.language.split("-")[0].lower())
    return skills


@dataclass
class Conversation:
    """One call's turns, trigger state and firings, in order."""

    turns: list[Turn] = field(default_factory=list)
    state: TriggerState = field(default_factory=TriggerState)
    firings: list[Firing] = field(default_factory=list)

    def add(self, turn: Turn, config: TriggerConfig) -> list[Firing]:
        index = len(self.turns)
        self.turns.append(turn)
        fired = evaluate(config, self.state, turn, index)
        self.firings += fired
        return fired

    def packet(self, call_id: str, caller_number: str, policy: EscalationPolicy,
               firing: Firing | None = None) -> dict[str, Any]:
        """The context packet as of now; the trigger is ``firing`` or the last one that fired."""
        firing = firing or (self.firings[-1] if self.firings else None)
        priority = "high" if firing is not None and firing.trigger in URGENT_TRIGGERS \
            else "normal"
        return build_packet(call_id=call_id, caller_number=caller_number, turns=self.turns,
                            state=self.state, firing=firing, priority=priority,
                            summarizer=policy.summarizer)
