"""Twilio's call update (``Status=completed``), so a bot built for Twilio can hang up.

Pipecat's TwilioFrameSerializer (and bots like it) end a call by POSTing
``Status=completed`` to ``{base_url}/2010-04-01/Accounts/{sid}/Calls/{callSid}.json``
with Basic auth. Pointed at warmline (``base_url`` = the API's URL, the password =
the call's token from the ``start`` message, any account SID), that request
hangs the caller up exactly as ``POST /calls/{id}/hangup`` does. Only what a
bot needs is here: any other update (``Twiml``, ``Url``: a redirect) gets 400
pointing at ``/calls/{id}/transfer``.

Answers follow Twilio's shapes, which Pipecat reads: 200 with the call; 404
code 20404 for a call warmline does not know or that has ended (Pipecat takes
that as "already hung up"); 409 code 21220 for a call that is with a human or
being transferred, which is no longer the bot's to end.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from warmline.api.calls import end_call
from warmline.api.dependencies import EngineDep
from warmline.calls.call import Call, CallState

router = APIRouter()
NOT_FOUND, INVALID_STATE = 20404, 21220  # Twilio's error codes for these answers


@router.post("/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json",
             include_in_schema=False)
async def update_call(account_sid: str, call_sid: str, request: Request,
                      engine: EngineDep) -> JSONResponse:
    form = parse_qs((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    problem = _unsupported(form)
    if problem is not None:
        return _error(400, None, problem)
    call = engine.known_call(call_sid)
    if not isinstance(call, Call) or call.ended:
        return _error(404, NOT_FOUND, f"call {call_sid} " + (
            "has ended" if call is not None else "is not known to warmline"))
    if call.state is not CallState.AI:
        return _error(409, INVALID_STATE, f"call {call_sid} is {call.state.value}: "
                      "no longer with the bot, so not the bot's to end")
    end_call(engine, call)
    return JSONResponse({"sid": call_sid, "account_sid": account_sid, "status": "completed"})


def _unsupported(form: dict[str, list[str]]) -> str | None:
    """Why the update asks for something other than a hang-up, or None."""
    others = sorted(set(form) - {"Status"})
    if others:
        return (f"{', '.join(others)}: not supported; warmline takes Status=completed "
                "here (transfers: POST /calls/{id}/transfer)")
    status = form.get("Status", [])
    if status != ["completed"]:
        return f"Status: must be 'completed', got {', '.join(status) or 'nothing'}"
    return None


def _error(status: int, code: int | None, message: str) -> JSONResponse:
    body: dict[str, Any] = {"code": code, "message": message, "status": status}
    return JSONResponse(body, status)
