"""Pipecat bots on warmline calls: hang-up and transfer without Twilio credentials.

Install with ``pip install 'warmline[pipecat]'``. warmline streams a call to a
bot in Twilio Media Streams framing, so Pipecat's ``TwilioFrameSerializer``
already carries the audio; what it cannot do on its own is end the call or
hand it over, because both go to Twilio's REST API with Twilio credentials.
This module swaps the two for warmline's, with nothing but the call's own
token (``call_token`` in the ``start`` message) as the key:

- :class:`WarmlineFrameSerializer` is Pipecat's serializer pointed at
  warmline's Twilio-compatible call update (api/twilio.py): when the bot's
  pipeline ends, the caller gets a BYE. When warmline ended the stream first
  (the caller hung up, or a human took the call) it does not try: the call is
  no longer the bot's to end.
- :func:`transfer_tool` is a Pipecat ``FunctionSchema`` with its handler: the
  LLM picks one of the destinations the developer listed, and the handler asks
  warmline for the transfer (``POST /calls/{id}/transfer``) and reports the
  answer back to the LLM.

It talks to warmline over HTTP only, so the bot can run anywhere, and nothing
else in warmline imports it (or Pipecat).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import Any

import httpx
from pipecat.adapters.llm.schemas.function_schema import FunctionSchema
from pipecat.frames.frames import CancelFrame, EndFrame, Frame, FunctionCallResultProperties
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.services.llm_service import FunctionCallParams

ACCOUNT_SID = "warmline"  # the accountSid warmline's start message carries; any value works
TRANSFER_TIMEOUT = 10.0  # seconds for warmline to accept or refuse a transfer request


class WarmlineError(ValueError):
    """The call data lacks what the bot needs to reach warmline (names the key)."""


def _wire(call_data: Any, key: str) -> Any:
    """``call_data[key]`` for Pipecat's CallData or a plain dict; None when absent."""
    try:
        return call_data[key]
    except (KeyError, TypeError):
        return None


def _call_fields(call_data: Any, api_url: str | None) -> tuple[str, str, str, str]:
    """(stream_sid, call_sid, call_token, api_url) from parse_telephony_websocket's call data."""
    body = _wire(call_data, "body") or {}
    fields = {"stream_id": _wire(call_data, "stream_id"), "call_id": _wire(call_data, "call_id"),
              "body.call_token": body.get("call_token"),
              "body.api_url": api_url or body.get("api_url")}
    missing = [key for key, value in fields.items() if not value]
    if missing:
        raise WarmlineError(
            f"call data without {', '.join(missing)}: is this stream from warmline? "
            "(body.api_url: pass api_url= when warmline serves no HTTP API it can name)")
    stream_sid, call_sid, token, url = (str(value) for value in fields.values())
    return stream_sid, call_sid, token, url.rstrip("/")


class WarmlineFrameSerializer(TwilioFrameSerializer):
    """``TwilioFrameSerializer`` whose hang-up goes to warmline, keyed by the call's token.

    Build it from the call data Pipecat parsed off the stream::

        _, call_data = await parse_telephony_websocket(websocket)
        serializer = WarmlineFrameSerializer.for_call(call_data)

    Everything else (audio both ways, ``clear`` on interruption, DTMF) is
    Pipecat's own Twilio code, unchanged.
    """

    def __init__(self, stream_sid: str, call_sid: str, call_token: str, api_url: str,
                 params: TwilioFrameSerializer.InputParams | None = None) -> None:
        super().__init__(stream_sid, call_sid=call_sid, account_sid=ACCOUNT_SID,
                         auth_token=call_token, base_url=api_url, params=params)
        self.stream_stopped = False  # warmline said ``stop``: the call is not the bot's now

    @classmethod
    def for_call(cls, call_data: Any, api_url: str | None = None,
                 params: TwilioFrameSerializer.InputParams | None = None
                 ) -> WarmlineFrameSerializer:
        """From ``parse_telephony_websocket``'s call data. ``api_url`` (``http://host:port``
        of warmline's API) defaults to the one warmline sent; WarmlineError names what is
        missing."""
        stream_sid, call_sid, token, url = _call_fields(call_data, api_url)
        return cls(stream_sid, call_sid, token, url, params)

    async def serialize(self, frame: Frame) -> str | bytes | None:
        if self.stream_stopped and isinstance(frame, (EndFrame, CancelFrame)):
            return None  # hung up by the caller, or with a human: not the bot's to end
        return await super().serialize(frame)

    async def deserialize(self, data: str | bytes) -> Frame | None:
        text = data if isinstance(data, str) else data.decode("utf-8", "replace")
        if '"stop"' in text:  # cheap: the 50 media messages a second never contain it
            with contextlib.suppress(ValueError, AttributeError):  # Pipecat logs bad JSON
                self.stream_stopped |= json.loads(text).get("event") == "stop"
        return await super().deserialize(data)


def transfer_tool(call_data: Any, destinations: Mapping[str, str], *,
                  api_url: str | None = None, mode: str = "bridge",
                  options: Mapping[str, Any] | None = None,
                  name: str = "transfer_call") -> FunctionSchema:
    """A tool the LLM calls to hand the caller to a person: put it in the LLMContext's tools.

    ``destinations`` maps the names the LLM may choose (``"billing"``) to SIP or tel:
    URIs; the LLM never sees or invents an address. ``mode`` and ``options`` (any other
    field of ``POST /calls/{id}/transfer``: ``timeout``, ``announce``, ``fallback``...)
    go into every request. The LLM gets ``{"status": "transferring", "handoff_id"}``, or
    ``{"error": ...}`` with warmline's reason, to tell the caller.
    """
    if not destinations:
        raise WarmlineError("transfer_tool: destinations is empty")
    _, call_sid, token, url = _call_fields(call_data, api_url)
    endpoint = f"{url}/calls/{call_sid}/transfer"
    fixed = {"mode": mode, **(options or {})}

    async def transfer(params: FunctionCallParams) -> None:
        choice = str(params.arguments.get("destination", ""))
        if choice not in destinations:
            await params.result_callback(
                {"error": f"unknown destination {choice!r}; one of {sorted(destinations)}"})
            return
        summary = str(params.arguments.get("summary", ""))
        body = {**fixed, "to": destinations[choice],
                "context": {"destination": choice, "summary": summary}}
        answer = await _post(endpoint, token, body)
        if "handoff_id" in answer:  # accepted: the call is leaving the bot, nothing to say
            await params.result_callback(answer, properties=FunctionCallResultProperties(
                run_llm=False))
        else:
            await params.result_callback(answer)

    return FunctionSchema(
        name=name,
        description="Transfer the caller to a person when they ask for one or you cannot "
                    "help. Say a short goodbye first; the call then leaves you.",
        properties={
            "destination": {"type": "string", "enum": sorted(destinations),
                            "description": "who takes the call"},
            "summary": {"type": "string",
                        "description": "what the person should know: the caller's issue "
                                       "and what was tried, in one or two sentences"}},
        required=["destination", "summary"], handler=transfer)


async def _post(endpoint: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
    """warmline's answer as the LLM should see it: the handoff, or why not (never raises)."""
    try:
        async with httpx.AsyncClient(timeout=TRANSFER_TIMEOUT) as client:
            response = await client.post(endpoint, json=body,
                                         headers={"Authorization": f"Bearer {token}"})
    except httpx.HTTPError as error:
        return {"error": f"warmline unreachable: {error.__class__.__name__}"}
    if response.status_code == 202:
        accepted = response.json()
        return {"status": "transferring", "handoff_id": accepted["handoff_id"]}
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    return {"error": f"transfer refused ({response.status_code}): {detail}"[:500]}
