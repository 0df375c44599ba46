"""warmline.pipecat's two parts against a recording HTTP server on loopback (no SIP).

The serializer's hang-up is Pipecat's own request (form ``Status=completed``, Basic auth
with the call's token) sent to warmline's URL, and not sent once warmline said ``stop``;
the transfer tool's handler turns warmline's answers (accepted, refused, unreachable, a
destination the developer never listed) into what the LLM is told.
"""

from __future__ import annotations

import asyncio
import base64
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pipecat.frames.frames import EndFrame, FunctionCallResultProperties

from tests.interop.peers import free_port
from warmline.api import start_http, stop_http
from warmline.pipecat import WarmlineError, WarmlineFrameSerializer, transfer_tool

CALL = {"stream_id": "MZ1", "call_id": "call-1", "body": {"call_token": "tok-1"}}


@dataclass
class Seen:
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    answer: tuple[int, dict[str, Any]] = (202, {"handoff_id": "handoff-1", "status": "ringing"})


def recording_app(seen: Seen) -> FastAPI:
    app = FastAPI()

    @app.post("/{path:path}")
    async def anything(path: str, request: Request) -> JSONResponse:
        seen.requests.append(("/" + path, dict(request.headers), await request.body()))
        return JSONResponse(seen.answer[1], seen.answer[0])

    return app


async def with_server(seen: Seen, work: Any) -> Any:
    port = free_port()
    server, task = await start_http(recording_app(seen), "127.0.0.1", port)
    try:
        return await work(f"http://127.0.0.1:{port}")
    finally:
        await stop_http(server, task)


async def serializer_ending(api_url: str, first: str | None) -> None:
    serializer = WarmlineFrameSerializer.for_call(CALL, api_url=api_url)
    if first is not None:
        await serializer.deserialize(first)
    assert await serializer.serialize(EndFrame()) is None


def test_the_serializer_hangs_up_with_the_calls_token() -> None:
    seen = Seen(answer=(200, {"status": "completed"}))
    asyncio.run(with_server(seen, lambda url: serializer_ending(url, None)))
    [(path, headers, body)] = seen.requests
    assert path == "/2010-04-01/Accounts/warmline/Calls/call-1.json"
    assert headers["authorization"] == "Basic " + base64.b64encode(b"warmline:tok-1").decode()
    assert parse_qs(body.decode()) == {"Status": ["completed"]}


def test_the_serializer_leaves_a_call_warmline_stopped_alone() -> None:
    seen = Seen()
    stop = json.dumps({"event": "stop", "streamSid": "MZ1", "stop": {"callSid": "call-1"}})
    asyncio.run(with_server(seen, lambda url: serializer_ending(url, stop)))
    assert seen.requests == []


def test_call_data_not_from_warmline_is_named() -> None:
    with pytest.raises(WarmlineError, match=r"body\.call_token.*body\.api_url"):
        WarmlineFrameSerializer.for_call({"stream_id": "MZ1", "call_id": "c", "body": {}})
    with pytest.raises(WarmlineError, match="destinations"):
        transfer_tool(CALL, {}, api_url="http://127.0.0.1:1")


@dataclass
class Params:
    """The two fields of Pipecat's FunctionCallParams the handler uses."""

    arguments: dict[str, Any]
    results: list[tuple[Any, Any]] = field(default_factory=list)

    async def result_callback(self, result: Any, *,
                              properties: FunctionCallResultProperties | None = None) -> None:
        self.results.append((result, properties))


async def call_tool(api_url: str, arguments: dict[str, Any]) -> Params:
    tool = transfer_tool(CALL, {"billing": "sip:billing@pbx.example.com"}, api_url=api_url,
                         options={"timeout": 12})
    params = Params(arguments)
    assert tool.handler is not None
    await tool.handler(params)  # type: ignore[arg-type]
    return params


def test_the_tool_describes_only_the_listed_names() -> None:
    tool = transfer_tool(CALL, {"support": "sip:s@pbx", "billing": "sip:b@pbx"},
                         api_url="http://127.0.0.1:1")
    assert tool.name == "transfer_call" and tool.required == ["destination", "summary"]
    assert tool.properties["destination"]["enum"] == ["billing", "support"]
    assert "sip:" not in json.dumps(tool.to_default_dict())  # the LLM never sees an address


def test_an_accepted_transfer_tells_the_llm_and_keeps_it_quiet() -> None:
    seen = Seen()
    params = asyncio.run(with_server(seen, lambda url: call_tool(
        url, {"destination": "billing", "summary": "refund for a double charge"})))
    [(path, headers, body)] = seen.requests
    assert path == "/calls/call-1/transfer" and headers["authorization"] == "Bearer tok-1"
    assert json.loads(body) == {"mode": "bridge", "timeout": 12,
                                "to": "sip:billing@pbx.example.com",
                                "context": {"destination": "billing",
                                            "summary": "refund for a double charge"}}
    [(result, properties)] = params.results
    assert result == {"status": "transferring", "handoff_id": "handoff-1"}
    assert properties is not None and properties.run_llm is False


def test_a_refused_transfer_gives_the_llm_warmlines_reason() -> None:
    seen = Seen(answer=(403, {"detail": "to: not in [routing] allow"}))
    params = asyncio.run(with_server(seen, lambda url: call_tool(
        url, {"destination": "billing", "summary": "x"})))
    [(result, properties)] = params.results
    assert result == {"error": "transfer refused (403): to: not in [routing] allow"}
    assert properties is None  # the LLM answers: it tells the caller


def test_an_unknown_name_or_an_unreachable_warmline_is_an_error_for_the_llm() -> None:
    seen = Seen()
    params = asyncio.run(with_server(seen, lambda url: call_tool(
        url, {"destination": "sip:attacker@evil.example", "summary": "x"})))
    assert seen.requests == []  # nothing dialled that the developer did not list
    [(result, _)] = params.results
    assert "unknown destination" in result["error"] and "billing" in result["error"]
    closed = asyncio.run(call_tool(f"http://127.0.0.1:{free_port()}",
                                   {"destination": "billing", "summary": "x"}))
    [(result, _)] = closed.results
    assert result == {"error": "warmline unreachable: ConnectError"}
