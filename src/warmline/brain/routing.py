"""Where an escalation goes: a department chosen by intent and skills, open or not.

A department has destinations (tried in order), the intents and skills it
takes, business hours in its own time zone with holidays, and what happens
when it is closed or nobody answers: voicemail with a committed callback
window, a callback scheduled at the next opening, a ticket sent to a
webhook, or back to the AI. Opening hours are local wall-clock times in an
IANA zone (zoneinfo), so a department open 09:00-17:00 in New York is open
at 09:00 New York time on both sides of a DST change. Destinations are
validated when the routing is built: a bad URI is an error naming it, not a
failure on the first call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from warmline.transfer.handoff import Destination, FallbackKind

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class RoutingError(ValueError):
    """A routing configuration that cannot work; the message names the key."""


@dataclass(frozen=True)
class Hours:
    """Weekly opening hours in ``zone``: ``weekly[day]`` lists (open, close) local times."""

    zone: str
    weekly: dict[str, tuple[tuple[time, time], ...]]
    holidays: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise RoutingError(f"hours.zone: {self.zone!r} is not an IANA time zone") from None
        for day, spans in self.weekly.items():
            if day not in WEEKDAYS:
                raise RoutingError(f"hours.weekly: {day!r} is not one of {', '.join(WEEKDAYS)}")
            for start, end in spans:
                if not start < end:
                    raise RoutingError(f"hours.weekly.{day}: {start}-{end} closes before it opens")

    def is_open(self, moment: datetime) -> bool:
        """``moment`` must be timezone-aware (it is converted to the department's zone)."""
        local = moment.astimezone(ZoneInfo(self.zone))
        if local.date() in self.holidays:
            return False
        spans = self.weekly.get(WEEKDAYS[local.weekday()], ())
        return any(start <= local.time() < end for start, end in spans)

    def next_opening(self, moment: datetime) -> datetime | None:
        """When the department next opens (aware, in its zone), within two weeks."""
        zone = ZoneInfo(self.zone)
        local = moment.astimezone(zone)
        for offset in range(15):
            day = local.date() + timedelta(days=offset)
            if day in self.holidays:
                continue
            for start, _ in sorted(self.weekly.get(WEEKDAYS[day.weekday()], ())):
                opening = datetime.combine(day, start, tzinfo=zone)
                if opening > local:
                    return opening
        return None


@dataclass(frozen=True)
class Department:
    name: str
    destinations: tuple[Destination, ...]
    intents: frozenset[str] = frozenset()
    skills: frozenset[str] = frozenset()
    hours: Hours | None = None  # None: always open
    after_hours: FallbackKind = FallbackKind.VOICEMAIL
    callback_window: timedelta = timedelta(hours=2)  # promised after the next opening

    def __post_init__(self) -> None:
        if not self.destinations:
            raise RoutingError(f"departments.{self.name}.destinations: at least one is needed")
        for index, destination in enumerate(self.destinations):
            try:
                destination.validate(f"departments.{self.name}.destinations[{index}]")
            except ValueError as error:
                raise RoutingError(str(error)) from None
        try:
            object.__setattr__(self, "after_hours", FallbackKind(self.after_hours))
        except ValueError:
            choices = ", ".join(kind.value for kind in FallbackKind)
            raise RoutingError(f"departments.{self.name}.after_hours: {self.after_hours!r} is "
                               f"not one of {choices}") from None


@dataclass(frozen=True)
class Route:
    department: Department
    open: bool
    destinations: tuple[Destination, ...]  # empty when closed
    next_opening: datetime | None


@dataclass
class Router:
    departments: list[Department]
    default: str  # the department taking intents nobody else claims
    by_name: dict[str, Department] = field(init=False)

    def __post_init__(self) -> None:
        self.by_name = {department.name: department for department in self.departments}
        if self.default not in self.by_name:
            raise RoutingError(f"routing.default: no department named {self.default!r}")

    def route(self, intent: str | None, skills: set[str], now: datetime) -> Route:
        """The department for ``intent`` that has the ``skills``, and whether it is open."""
        return self.route_to(self._choose(intent, skills), now)

    def route_to(self, department: Department, now: datetime) -> Route:
        """``department``'s destinations now, or its next opening when it is closed."""
        hours = department.hours
        is_open = hours is None or hours.is_open(now)
        next_opening = None if is_open or hours is None else hours.next_opening(now)
        return Route(department, is_open, department.destinations if is_open else (),
                     next_opening)

    def _choose(self, intent: str | None, skills: set[str]) -> Department:
        candidates = [d for d in self.departments if intent is not None and intent in d.intents]
        skilled = [d for d in candidates if skills <= d.skills]
        if skilled:
            return skilled[0]
        if candidates:
            return candidates[0]
        anyone_skilled = [d for d in self.departments if skills and skills <= d.skills]
        return anyone_skilled[0] if anyone_skilled else self.by_name[self.default]
