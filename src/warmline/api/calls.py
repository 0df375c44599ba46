"""Routes on calls: list them, transfer one, report its turns and how it went."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from sqlalchemy.exc import SQLAlchemyError

from warmline.api.auth import bearer, same_secret
from warmline.api.cluster import every_call
from warmline.api.dependencies import ApiSettings, EngineDep, SettingsDep
from warmline.api.errors import handoff_errors_as_http
from warmline.api.resolve import check_allowed, check_routable
from warmline.api.schemas import (
    CallEventsRequest,
    CsatModel,
    OutboundCallPlaced,
    OutboundCallRequest,
    ResolutionModel,
    ReturnRequest,
    TransferAccepted,
    TransferRequest,
    TurnAccepted,
    TurnModel,
)
from warmline.calls.call import Call, CallState
from warmline.calls.trunks import NoRoute
from warmline.engine import CallEngine
from warmline.records.report import call_history
from warmline.transfer.handoff import Handoff
from warmline.transport.resolver import ResolutionError

router = APIRouter()
SAFE_ID = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")  # what a call id can be; the rest: 404


@router.get("/calls")
async def list_calls(engine: EngineDep) -> list[dict[str, Any]]:
    """Calls warmline holds now, and those ended in the last ``[limits] keep_ended_calls``
    seconds; older ones are read one at a time from the records (GET /calls/{id}). In a
    cluster, every node's live calls, each with its ``node``."""
    if engine.shared is None:
        return engine.call_listing()
    return await every_call(engine)


@router.get("/calls/{call_id}")
async def get_call(call_id: str, engine: EngineDep, settings: SettingsDep) -> dict[str, Any]:
    """One call: from memory while it lives (and briefly after), else from the records
    with its events (404 when neither knows it)."""
    call = engine.known_call(call_id)
    if call is not None:
        return {**call.as_dict(), "source": "live"}
    history = await _from_the_records(settings, call_id)
    if history is None:
        raise HTTPException(404, f"no call {call_id}")
    return history


# The checks, first failure answers: the body (pydantic, 422), its caller_id against
# [outbound] (403), the department (422), "to" against [outbound] allow and the destination
# against [transfer] allow (403), the callback_url against [events] call_url_hosts (422),
# the trunk and "to" in DNS (422); then the call is placed (503 when no room).
@router.post("/calls", status_code=201)
async def place_call(body: OutboundCallRequest, engine: EngineDep) -> OutboundCallPlaced:
    request = body.build(engine.outbound.caller_id, engine.outbound.ring_timeout)
    if body.caller_id is not None:
        _forbid_if("caller_id", engine.outbound.caller_id_problem(body.caller_id))
    if body.department is not None and \
            body.department not in engine.escalation.department_names:
        known = ", ".join(engine.escalation.department_names) or "none configured"
        raise HTTPException(422, f"department: no department named {body.department!r} "
                                 f"({known})")
    _forbid_if("to", engine.outbound_problem(body.to, body.trunk))
    if request.destination is not None:
        check_allowed(Handoff("-", request.destination), engine, "destination.to")
    if body.callback_url is not None:
        _check_events_url(engine, "callback_url", body.callback_url)
    await _check_reachable(engine, body.to, body.trunk)
    try:
        call = await engine.place_call(request, body.callback_url)
    except OverflowError as error:
        raise HTTPException(503, f"no room for another call: {error}") from None
    except NoRoute as error:
        raise HTTPException(422, f"to: {error}") from None
    except ResolutionError as error:
        raise HTTPException(422, f"to: {error.name} does not resolve ({error.reason})") from None
    except OSError as error:
        raise HTTPException(503, f"no media port free: {error}") from None
    except ValueError as error:
        raise HTTPException(422, f"to: cannot be called: {error}") from None
    return OutboundCallPlaced(call_id=call.id, state=call.state.value, token=call.token)


@router.post("/calls/{call_id}/events")
async def call_events(call_id: str, body: CallEventsRequest, engine: EngineDep
                      ) -> dict[str, Any]:
    """This call's status events also go to ``url`` from now on, signed as [events] are.
    422 when the URL's host is not in [events] call_url_hosts (or it is not https)."""
    _require_call(engine, call_id)
    call = engine.calls[call_id]
    if call.ended:
        raise HTTPException(409, f"call {call_id} has ended")
    _check_events_url(engine, "url", body.url)
    engine.set_call_events(call, body.url)
    return {"call_id": call_id, "url": body.url}


def _forbid_if(field: str, problem: str | None) -> None:
    if problem is not None:
        raise HTTPException(403, f"{field}: {problem}")


def _check_events_url(engine: CallEngine, field: str, url: str) -> None:
    events = engine.call_events
    problem = "per-call callback URLs are off: no [events] secret to sign them with" \
        if events is None else events.problem(url)
    if problem is not None:
        raise HTTPException(422, f"{field}: {problem}")


async def _check_reachable(engine: CallEngine, to: str, trunk: str | None) -> None:
    try:
        await engine.reachable(to, trunk)
    except NoRoute as error:
        raise HTTPException(422, f"{'trunk' if trunk else 'to'}: {error}") from None
    except ResolutionError as error:
        raise HTTPException(422, f"to: {error.name} does not resolve ({error.reason})") from None


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
async def csat(call_id: str, body: CsatModel, engine: EngineDep,
               settings: SettingsDep) -> dict[str, Any]:
    """A satisfaction score (API or post-call survey, even hours later) for the KPIs."""
    await _require_known_call(engine, settings, call_id)
    engine.record(call_id, "call.csat", {"score": body.score})
    return {"call_id": call_id, "score": body.score}


@router.post("/calls/{call_id}/resolution", status_code=201)
async def resolution(call_id: str, body: ResolutionModel, engine: EngineDep,
                     settings: SettingsDep) -> dict[str, Any]:
    """Whether the caller's issue was resolved on this call (first-call resolution)."""
    await _require_known_call(engine, settings, call_id)
    engine.record(call_id, "call.resolution", {"resolved": body.resolved})
    return {"call_id": call_id, "resolved": body.resolved}


@router.post("/calls/{call_id}/hangup", status_code=202)
async def hang_up(call_id: str, request: Request, engine: EngineDep,
                  settings: SettingsDep) -> dict[str, Any]:
    """End the call (the bot is done): BYE to the caller, saying why (RFC 3326 Reason).
    409 when it has ended already; a call still ringing is refused with 480. A bot (the
    call's own token) ends only a call it holds: once a human has it, 409, so a bot that
    hangs up as its pipeline ends never cuts the human off; the API token ends any."""
    _require_call(engine, call_id)
    call = engine.calls[call_id]
    if call.ended:
        raise HTTPException(409, f"call {call_id} has ended")
    by_the_bot = settings.api_token is not None and not same_secret(bearer(request),
                                                                    settings.api_token)
    if by_the_bot and call.state is not CallState.AI:
        raise HTTPException(409, f"call {call_id} is {call.state.value}: the call's own "
                                 "token ends it only while it is with the AI")
    end_call(engine, call)
    return {"call_id": call_id, "status": "hanging up"}


@router.post("/calls/{call_id}/return", status_code=202)
async def hand_back(call_id: str, body: ReturnRequest, engine: EngineDep) -> dict[str, Any]:
    """The agent a call was handed to (mode agent) ends its part, with what to tell the
    first agent: the caller goes back to it (a temporary handoff) or the call ends (final).
    409 when the call is not with an agent it was handed to."""
    _require_call(engine, call_id)
    with handoff_errors_as_http():
        engine.hand_back(call_id, body.report)
    return {"call_id": call_id, "status": "returning"}


HANGUP_REASON = 'SIP;cause=200;text="the AI agent ended the call"'


def end_call(engine: CallEngine, call: Call) -> None:
    """The bot is done: recorded, then a BYE saying so. Once: a second request while
    the BYE is out changes nothing."""
    if not call.hangup_requested:
        call.hangup_requested = True
        engine.record(call.id, "call.hangup_requested", {})  # before the call.ended it causes
        engine.hang_up(call, HANGUP_REASON)


def _require_call(engine: CallEngine, call_id: str) -> None:
    """404 for a call the engine does not know, 409 for one it lists as ended (no longer
    whole). Called in the route, not as a dependency, so an invalid body still gets its
    422 first."""
    if call_id in engine.ended_calls:
        raise HTTPException(409, f"call {call_id} has ended")
    if call_id not in engine.calls:
        raise HTTPException(404, f"no call {call_id}")


async def _require_known_call(engine: CallEngine, settings: ApiSettings, call_id: str) -> None:
    """404 unless the call is in memory or, once forgotten, in the records."""
    if engine.known_call(call_id) is None and \
            await _from_the_records(settings, call_id) is None:
        raise HTTPException(404, f"no call {call_id}")


async def _from_the_records(settings: ApiSettings, call_id: str) -> dict[str, Any] | None:
    """The call as the records tell it (a worker thread: the loop carries calls), or None;
    503 naming the records when the database cannot be read."""
    if settings.records_url is None or not SAFE_ID.match(call_id):
        return None
    loop = asyncio.get_running_loop()
    try:
        return await loop.run_in_executor(None, call_history, settings.records_url, call_id)
    except SQLAlchemyError as error:
        raise HTTPException(503, f"records: cannot be read now ({type(error).__name__})"
                            ) from None
