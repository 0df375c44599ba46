"""The smaller defects issue 13 lists, each held by a test."""

from __future__ import annotations

import time

from fastapi.testclient import TestClient

from tests.unit.test_pii_nowhere import Rig, rig  # noqa: F401  (the fixture)
from warmline.api import build_app
from warmline.records.kpis import compute
from warmline.records.store import Event
from warmline.transfer.handoff import Handoff


def test_a_rest_transfer_puts_the_intent_it_was_given_in_the_headers(
        rig: Rig) -> None:  # noqa: F811
    with TestClient(build_app(rig.engine)) as api:
        asked = api.post("/calls/call-pii-2/transfer", json={
            "to": "sip:agent@127.0.0.1:5090", "mode": "warm",
            "context": {"intent": "billing_dispute"}})
        assert asked.status_code == 202, asked.text
        handoff = rig.engine.handoffs[asked.json()["handoff_id"]]
        listed = api.get("/calls").json()
    assert ("X-Warmline-Intent", "billing_dispute") in handoff.headers
    assert handoff.packet is not None and handoff.packet["intent"]["source"] == "request"
    started = next(call["started_at"] for call in listed if call["id"] == "call-pii-2")
    assert abs(started - time.time()) < 60  # Unix time, not the loop's monotonic clock


def test_an_event_shows_when_it_happened_whatever_its_detail_says() -> None:
    handoff = Handoff("call-1", None)
    promised = time.time() + 7200
    handoff.emit("callback_scheduled", callback_at=promised, at=promised)
    shown = handoff.events[-1].as_dict()
    assert shown["at"] < promised - 3600 and shown["kind"] == "callback_scheduled"
    assert shown["callback_at"] == promised


def test_first_call_resolution_is_no_data_until_one_is_reported() -> None:
    started = Event(1000.0, "call-1", "call.started", {"caller": "sip:+15550100@x"})
    assert compute([started])["overall"]["first_call_resolution"] is None
    resolved = Event(1001.0, "call-1", "call.resolution", {"resolved": True})
    assert compute([started, resolved])["overall"]["first_call_resolution"] == 1.0


def test_a_bot_can_end_its_call_and_only_its_call(rig: Rig) -> None:  # noqa: F811
    ended: list[tuple[str, str | None]] = []
    rig.engine.switchboard.hang_up = (  # type: ignore[method-assign]
        lambda leg, reason=None: ended.append((leg.session.remote_party.uri, reason)))
    call = rig.engine.calls["call-pii-1"]
    with TestClient(build_app(rig.engine, "master")) as api:
        own = {"Authorization": f"Bearer {call.token}"}
        assert api.post("/calls/call-pii-2/hangup", headers=own).status_code == 401
        assert api.post("/calls/call-pii-1/hangup", headers=own).status_code == 202
        assert api.post("/calls/call-nope/hangup",
                        headers={"Authorization": "Bearer master"}).status_code == 404
    assert len(ended) == 1 and "ended the call" in (ended[0][1] or "")
    assert [event.kind for event in rig.records.events][-1] == "call.hangup_requested"


def test_a_second_hangup_while_the_bye_is_out_changes_nothing(rig: Rig) -> None:  # noqa: F811
    ended: list[str | None] = []
    rig.engine.switchboard.hang_up = (  # type: ignore[method-assign]
        lambda leg, reason=None: ended.append(reason))
    with TestClient(build_app(rig.engine)) as api:
        assert api.post("/calls/call-pii-2/hangup").status_code == 202
        assert api.post("/calls/call-pii-2/hangup").status_code == 202
    assert len(ended) == 1
    assert [e.kind for e in rig.records.events].count("call.hangup_requested") == 1


def test_the_handoff_table_says_how_long_the_caller_waited_and_who_answered() -> None:
    from warmline.transfer.handoff import Destination, HandoffEvent

    handoff = Handoff("call-1", Destination("sip:ana@pbx", "bridge", 30,
                                            ring_with=("sip:ben@pbx",)))
    start = handoff.events[0].at
    assert handoff.as_row()["wait_s"] is None  # still running
    handoff.events += [HandoffEvent(start + 4.0, "answered", {"by": "sip:ben@pbx"}),
                       HandoffEvent(start + 6.5, "connected", {})]
    row = handoff.as_row()
    assert row["wait_s"] == 6.5 and row["answered_by"] == "sip:ben@pbx"
