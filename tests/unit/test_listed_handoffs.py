"""A handoff of a call let go is kept as recorded (JSON text) while its call is listed,
and every route that showed it whole shows it the same from the record."""

from __future__ import annotations

import json
from typing import Any

from fastapi.testclient import TestClient

from tests.unit.test_pii_nowhere import Rig, rig, run_warm  # noqa: F401  (the fixture)
from warmline.api import build_app
from warmline.calls.call import EndedCall
from warmline.transfer.handoff import Destination, Handoff, HandoffRecord, TransferMode

API = {"Authorization": "Bearer T"}


def _shown(api: TestClient, handoff_id: str, token: str) -> dict[str, Any]:
    """What the API says of one handoff, by each route that shows it."""
    own = {"token": token}
    listing = api.get("/handoffs", headers=API).json()
    metrics = api.get("/metrics", headers=API).text
    return {"one": api.get(f"/handoffs/{handoff_id}", params=own).json(),
            "pop": api.get(f"/handoffs/{handoff_id}/context", params=own).json(),
            "row": next(row for row in listing if row["id"] == handoff_id),
            "waits": [line for line in metrics.splitlines()
                      if line.startswith("warmline_trigger_to_first_word_seconds_count")],
            "status": [line for line in metrics.splitlines()
                       if line.startswith("warmline_handoffs{")]}


def test_a_let_go_call_s_handoff_reads_the_same_from_its_record(
        rig: Rig) -> None:  # noqa: F811
    engine = rig.engine
    with TestClient(build_app(engine, api_token="T")) as api:
        asked = api.post("/calls/call-pii-2/transfer", headers=API, json={
            "to": "sip:agent@127.0.0.1:5090", "mode": "warm",
            "context": {"intent": "billing_dispute", "summary": "wants a refund"}})
        assert asked.status_code == 202, asked.text
        handoff_id = asked.json()["handoff_id"]
        run_warm(rig, handoff_id)
        whole = engine.handoffs[handoff_id]
        whole.emit("human_first_word", by="sip:agent@127.0.0.1:5090")
        token = whole.token
        before = _shown(api, handoff_id, token)
        assert before["waits"] == ["warmline_trigger_to_first_word_seconds_count 1"]

        call = engine.calls.pop("call-pii-2")
        call.ended_at = 5.0
        engine.call_forgotten(call)
        assert handoff_id not in engine.handoffs
        assert isinstance(engine.shown_handoffs[handoff_id], HandoffRecord)
        assert _shown(api, handoff_id, token) == before
        assert api.get(f"/handoffs/{handoff_id}/context",
                       params={"token": "not-its-token"}).status_code == 401

        engine.call_unlisted(EndedCall.of(call))
        assert handoff_id not in engine.shown_handoffs
        assert api.get(f"/handoffs/{handoff_id}", headers=API).status_code == 404
        rows = api.get("/handoffs", headers=API).json()
        assert [row for row in rows if row["id"] == handoff_id] == [before["row"]]


def test_the_list_keeps_the_order_handoffs_started_in_and_a_late_step_shows(
        rig: Rig) -> None:  # noqa: F811
    engine = rig.engine
    with TestClient(build_app(engine)) as api:
        started = [api.post(f"/calls/{call_id}/transfer", json={
            "to": "sip:agent@127.0.0.1:5090", "mode": "warm"}).json()["handoff_id"]
            for call_id in ("call-pii-1", "call-pii-2")]
        call = engine.calls.pop("call-pii-2")  # the later one's call is let go first
        call.ended_at = 5.0
        whole = engine.handoffs[started[1]]
        engine.call_forgotten(call)
        assert [row["id"] for row in api.get("/handoffs").json()] == started[::-1]
        whole.emit("ticket_created", ticket="T-1")  # a webhook answering late
        shown = api.get(f"/handoffs/{started[1]}").json()
        assert shown["events"][-1]["kind"] == "ticket_created"
        assert isinstance(engine.shown_handoffs[started[1]], HandoffRecord)


def test_a_record_keeps_a_detail_json_has_no_form_for_as_its_text() -> None:
    handoff = Handoff("call-1", Destination("sip:ana@pbx", TransferMode.BRIDGE, 30))
    handoff.emit("answered", by="sip:ana@pbx", odd=TransferMode.WARM, thing=_Odd())
    record = HandoffRecord.of(handoff)
    shown = record.as_dict()
    assert shown["events"][-1]["thing"] == "odd one" and shown["events"][-1]["odd"] == "warm"
    assert record.as_row() == json.loads(json.dumps(handoff.as_row()))
    assert record.as_row()["answered_by"] == "sip:ana@pbx"
    assert not record.ended and record.token == handoff.token


class _Odd:
    def __str__(self) -> str:
        return "odd one"


def test_a_packet_json_cannot_write_is_shown_as_null_not_raised() -> None:
    looped: dict[str, Any] = {"summary": "wants a refund"}
    looped["self"] = looped
    handoff = Handoff("call-1", Destination("sip:ana@pbx", TransferMode.BLIND, 30),
                      packet=looped, context={"intent": "refund"})
    shown = HandoffRecord.of(handoff).as_dict()
    assert shown["packet"] is None and shown["unwritable"] == ["packet"]
    assert shown["context"] == {"intent": "refund"} and shown["id"] == handoff.id
