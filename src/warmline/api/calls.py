"""Routes on calls: list them, transfer one, report its turns and how it went."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from warmline.api.dependencies import EngineDep
from warmline.api.errors import handoff_errors_as_http
from warmline.api.resolve import check_allowed, check_routable
from warmline.api.schemas import (
    CsatModel,
    ResolutionModel,
    TransferAccepted,
    TransferRequest,
    TurnAccepted,
    TurnModel,
)
from warmline.calls.call import Call
from warmline.engine import CallEngine

router = APIRouter()


@router.get("/calls")
async def list_calls(engine: EngineDep) -> list[dict[str, Any]]:
    """Calls warmline holds now, and ended ones it still remembers."""
    return [call.as_dict() for call in engine.calls.values()]


# The checks, first failure answers: the body (pydantic, 422), its caller_id (422), the
# destinations against the allow-list (403), their hosts in DNS (422), then the engine
# (404, 409, 413, 422).
# (A docstring here would become the OpenAPI description, which has none today.)
@router.post("/calls/{call_id}/transfer", status_code=202)
async def transfer(call_id: str, body: TransferRequest, engine: EngineDep) -> TransferAccepted:
    with handoff_errors_as_http():
        handoff = body.handoff(call_id)
    check_allowed(handoff, engine)
    await check_routable(handoff, engine)
    with handoff_errors_as_http():
        engine.transfer(call_id, handoff)
    return TransferAccepted(handoff_id=handoff.id, status=handoff.status)


@router.post("/calls/{call_id}/turns", status_code=201)
async def add_turn(call_id: str, turn: TurnModel, engine: EngineDep) -> TurnAccepted:
    """Report a turn; triggers are evaluated and may start the configured handoff."""
    with handoff_errors_as_http():
        result = engine.add_turn(call_id, turn.build())
    return TurnAccepted.of(result)


@router.post("/calls/{call_id}/csat", status_code=201)
async def csat(call_id: str, body: CsatModel, engine: EngineDep) -> dict[str, Any]:
    """A satisfaction score (API or post-call survey) for the KPIs."""
    _require_call(engine, call_id)
    engine.record(call_id, "call.csat", {"score": body.score})
    return {"call_id": call_id, "score": body.score}


@router.post("/calls/{call_id}/resolution", status_code=201)
async def resolution(call_id: str, body: ResolutionModel, engine: EngineDep) -> dict[str, Any]:
    """Whether the caller's issue was resolved on this call (first-call resolution)."""
    _require_call(engine, call_id)
    engine.record(call_id, "call.resolution", {"resolved": body.resolved})
    return {"call_id": call_id, "resolved": body.resolved}


@router.post("/calls/{call_id}/hangup", status_code=202)
async def hang_up(call_id: str, engine: EngineDep) -> dict[str, Any]:
    """End the call (the bot is done): BYE to the caller, saying why (RFC 3326 Reason).
    409 when it has ended already; a call still ringing is refused with 480."""
    _require_call(engine, call_id)
    call = engine.calls[call_id]
    if call.ended:
        raise HTTPException(409, f"call {call_id} has ended")
    end_call(engine, call)
    return {"call_id": call_id, "status": "hanging up"}


HANGUP_REASON = 'SIP;cause=200;text="the AI agent ended the call"'


def end_call(engine: CallEngine, call: Call) -> None:
    """The bot is done: recorded, then a BYE saying so. Once: a second request while
    the BYE is out changes nothing."""
    if not call.hangup_requested:
        call.hangup_requested = True
        engine.record(call.id, "call.hangup_requested", {})  # before the call.ended it causes
        engine.hang_up(call, HANGUP_REASON)


def _require_call(engine: CallEngine, call_id: str) -> None:
    """404 for a call the engine does not know. Called in the route, not as a dependency,
    so an invalid body still gets its 422 first."""
    if call_id not in engine.calls:
        raise HTTPException(404, f"no call {call_id}")
