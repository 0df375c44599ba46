"""Routing: departments by intent and skills, business hours across DST, holidays, bad config."""

from __future__ import annotations

from datetime import UTC, date, datetime, time

import pytest

from warmline.brain.routing import Department, Hours, Router, RoutingError
from warmline.transfer.handoff import Destination

WEEKDAYS_9_TO_5 = {day: ((time(9), time(17)),) for day in ("mon", "tue", "wed", "thu", "fri")}
NEW_YORK = Hours("America/New_York", WEEKDAYS_9_TO_5, frozenset({date(2026, 12, 25)}))


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize(("moment", "is_open"), [
    (utc(2026, 3, 6, 13, 30), False),  # Fri 08:30 EST (UTC-5): not yet
    (utc(2026, 3, 6, 14, 30), True),  # Fri 09:30 EST
    (utc(2026, 3, 6, 21, 30), True),  # Fri 16:30 EST
    (utc(2026, 3, 9, 13, 30), True),  # Mon 09:30 EDT (UTC-4): DST began on Sunday the 8th
    (utc(2026, 3, 9, 21, 30), False),  # Mon 17:30 EDT: closed although 21:30 UTC was open Fri
    (utc(2026, 11, 2, 13, 30), False),  # Mon 08:30 EST: DST ended on Sunday Nov 1
    (utc(2026, 11, 2, 14, 0), True),
    (utc(2026, 12, 25, 15, 0), False),  # a holiday, a Friday
    (utc(2026, 3, 7, 15, 0), False),  # Saturday
])
def test_opening_hours_are_local_wall_clock_across_dst(moment: datetime, is_open: bool) -> None:
    assert NEW_YORK.is_open(moment) is is_open


def test_next_opening_skips_weekends_holidays_and_follows_dst() -> None:
    after_friday = NEW_YORK.next_opening(utc(2026, 3, 6, 23, 0))
    assert after_friday is not None
    assert after_friday.astimezone(UTC) == utc(2026, 3, 9, 13, 0)  # 09:00 EDT
    christmas_eve = NEW_YORK.next_opening(utc(2026, 12, 24, 23, 0))
    assert christmas_eve is not None and christmas_eve.date() == date(2026, 12, 28)


def dest(user: str) -> Destination:
    return Destination(f"sip:{user}@127.0.0.1:5080", "warm", 20)


ROUTER = Router([
    Department("billing", (dest("billing1"), dest("billing2")), frozenset({"billing_dispute"}),
               frozenset({"english"}), NEW_YORK),
    Department("billing-es", (dest("facturacion"),), frozenset({"billing_dispute"}),
               frozenset({"spanish", "english"})),
    Department("general", (dest("frontdesk"),), after_hours="ai"),
], default="general")


@pytest.mark.parametrize(("intent", "skills", "department"), [
    ("billing_dispute", set(), "billing"),
    ("billing_dispute", {"spanish"}, "billing-es"),
    ("weather", set(), "general"),
    (None, set(), "general"),
    ("weather", {"spanish"}, "billing-es"),  # nobody claims it; someone has the skill
])
def test_departments_by_intent_and_skills(intent: str | None, skills: set[str],
                                          department: str) -> None:
    assert ROUTER.route(intent, skills, utc(2026, 3, 9, 15, 0)).department.name == department


def test_a_closed_department_gives_no_destination_and_its_next_opening() -> None:
    route = ROUTER.route("billing_dispute", set(), utc(2026, 3, 7, 15, 0))
    assert not route.open and route.destinations == ()
    assert route.next_opening is not None and route.department.after_hours == "voicemail"


@pytest.mark.parametrize(("build", "named"), [
    (lambda: Hours("Mars/Olympus", {}), "hours.zone"),
    (lambda: Hours("UTC", {"funday": ()}), "hours.weekly"),
    (lambda: Hours("UTC", {"mon": ((time(17), time(9)),)}), "hours.weekly.mon"),
    (lambda: Department("x", ()), "departments.x.destinations"),
    (lambda: Department("x", (Destination("mailto:desk@example.com", "warm", 5),)),
     "departments.x.destinations[0]"),
    (lambda: Department("x", (dest("a"),), after_hours="pray"), "departments.x.after_hours"),
    (lambda: Router([Department("x", (dest("a"),))], default="y"), "routing.default"),
])
def test_bad_routing_config_names_the_key(build: object, named: str) -> None:
    with pytest.raises(RoutingError) as refused:
        build()  # type: ignore[operator]
    assert named in str(refused.value)


def test_the_policy_plans_destinations_then_the_after_hours_step() -> None:
    from datetime import timedelta

    from warmline.brain.escalation import EscalationPolicy
    from warmline.transfer.handoff import FallbackAction

    policy = EscalationPolicy(router=ROUTER)
    first, rest = policy.plan("billing_dispute", set(), utc(2026, 3, 9, 15, 0))
    assert first == dest("billing1") and rest[0] == dest("billing2")
    assert isinstance(rest[1], FallbackAction) and rest[1].kind == "voicemail"
    first, rest = policy.plan("billing_dispute", set(), utc(2026, 3, 7, 15, 0))  # Saturday
    [voicemail] = rest
    assert first is None and isinstance(voicemail, FallbackAction)
    promised = datetime.fromtimestamp(voicemail.at or 0, UTC)
    assert promised == utc(2026, 3, 9, 13, 0) + timedelta(hours=2)  # Monday 09:00 EDT + 2 h
    assert policy.plan("weather", set(), utc(2026, 3, 7, 15, 0))[1] == ["ai"]
