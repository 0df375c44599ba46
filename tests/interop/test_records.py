"""Records on SQLite and on the PostgreSQL running here: same code, same KPIs, nothing lost.

Outages, kill -9 and exact counts: test_records_outage.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.interop.postgres import scratch_database
from warmline.records.kpis import compute
from warmline.records.report import kpi_report
from warmline.records.store import Event, RecordWriter, connect, read_events

pytestmark = pytest.mark.interop


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'records.db'}"
        return
    with scratch_database("warmline_test") as url:
        yield url


T0 = 1_790_000_000.0


def fixture_events() -> list[Event]:
    """Four calls whose KPIs are worked out by hand in the test below."""
    return [
        Event(T0, "A", "call.started", {"caller": "+1"}),
        Event(T0 + 1, "A", "call.intent", {"intent": "billing"}),
        Event(T0 + 10, "A", "handoff.requested", {}, "hA"),
        Event(T0 + 14, "A", "handoff.human_first_word", {}, "hA"),
        Event(T0 + 60, "A", "call.csat", {"score": 4}),
        Event(T0 + 61, "A", "call.resolution", {"resolved": True}),
        Event(T0 + 100, "B", "call.started", {"caller": "+2"}),
        Event(T0 + 101, "B", "call.intent", {"intent": "billing"}),
        Event(T0 + 150, "B", "call.csat", {"score": 5}),
        Event(T0 + 151, "B", "call.resolution", {"resolved": True}),
        Event(T0 + 200, "D", "call.started", {"caller": "+3"}),
        Event(T0 + 201, "D", "call.intent", {"intent": "shipping"}),
        Event(T0 + 3600, "C", "call.started", {"caller": "+1"}),  # +1 again within 48 h
        Event(T0 + 3601, "C", "call.intent", {"intent": "shipping"}),
        Event(T0 + 3605, "C", "handoff.requested", {}, "hC"),
        Event(T0 + 3610, "C", "handoff.triggered", {}, "hC"),
        Event(T0 + 3620, "C", "handoff.human_first_word", {}, "hC"),
        Event(T0 + 3700, "C", "call.csat", {"score": 2}),
        Event(T0 + 3701, "C", "call.resolution", {"resolved": False}),
    ]


def test_kpis_match_the_hand_computed_figures(database_url: str, tmp_path: Path) -> None:
    writer = RecordWriter(database_url, tmp_path / "records")
    for event in fixture_events():
        writer.add(event)
    writer.close()
    assert writer.written == 19 and writer.pending == 0
    report = kpi_report(database_url, days=1, now=T0 + 7200)
    assert report["overall"] == {
        "calls": 4, "transfers": 2, "transfer_share": 0.5, "agent_handoffs": 0,
        "csat_escalated": 3.0, "csat_ai_only": 5.0, "first_call_resolution": 0.6667,
        "trigger_to_first_word_p50": 4.0, "trigger_to_first_word_p90": 10.0,
        "repeat_contact_48h": 0.25, "callbacks_promised": 0, "callbacks_kept": 0,
        "callbacks_failed": 0, "callback_kept_share": None}
    billing, shipping = report["by_intent"]["billing"], report["by_intent"]["shipping"]
    assert (billing["transfers"], billing["first_call_resolution"],
            billing["repeat_contact_48h"]) == (1, 1.0, 0.5)
    assert (shipping["csat_ai_only"], shipping["first_call_resolution"],
            shipping["trigger_to_first_word_p50"]) == (None, 0.0, 10.0)  # 10 s from trigger


def test_an_empty_period_gives_zeros(database_url: str) -> None:
    connect(database_url).dispose()
    report = kpi_report(database_url, days=1, now=T0)
    assert report["overall"]["calls"] == 0 and report["overall"]["transfer_share"] == 0.0
    assert report["by_intent"] == {}
    assert compute([])["overall"]["repeat_contact_48h"] == 0.0


def test_an_unreachable_database_keeps_every_event(tmp_path: Path) -> None:
    missing = tmp_path / "not-yet" / "records.db"  # SQLite cannot open it: the folder is absent
    url = f"sqlite:///{missing}"
    writer = RecordWriter(url, tmp_path / "records", retry_seconds=0.05)
    for event in fixture_events()[:5]:
        writer.add(event)
    writer.close(timeout=0.5)
    assert writer.written == 0 and writer.failures > 0 and writer.pending == 5
    missing.parent.mkdir()  # the database is back
    writer = RecordWriter(url, tmp_path / "records")  # ships the journal first
    writer.add(fixture_events()[5])
    writer.close()
    engine = connect(url)
    assert [e.kind for e in read_events(engine)] == [e.kind for e in fixture_events()[:6]]
    engine.dispose()
    assert writer.pending == 0


def test_the_kpis_command_prints_the_report(database_url: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from warmline.cli import main

    assert main(["kpis", "--db", database_url, "--days", "7"]) == 0
    printed = capsys.readouterr().out
    assert '"transfer_share": 0.0' in printed and '"by_intent": {}' in printed
