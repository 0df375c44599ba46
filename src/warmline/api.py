"""The control API over HTTP: list calls, ask for a transfer, follow the handoff.

`warmline serve --http HOST:PORT` serves it in the engine's own event loop,
so a request acts on the calls directly, with no locking. FastAPI publishes
the OpenAPI schema at /openapi.json (and the docs at /docs). Bad requests
change nothing and get a 4xx naming the field: 404 for an unknown call or
handoff, 409 when the call cannot take a transfer now (one handoff at a
time; the second of two concurrent requests loses), 413 for a context over
the size limit, 422 for an invalid URI, mode or timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import asdict
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import FastAPI, HTTPException, Path, Request, Response, WebSocket
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field, field_validator

from warmline.agents.media_stream import run_stream
from warmline.brain.turns import Action, AuthState, Turn
from warmline.dashboard import PAGE
from warmline.engine import CallEngine
from warmline.metrics import metrics_text
from warmline.records.report import daily_report, kpi_report
from warmline.sip.errors import SipParseError
from warmline.sip.uri import SipUri, parse_uri
from warmline.transfer.handoff import (
    Acceptance,
    CallerId,
    CallerIdMode,
    ConnectBy,
    Destination,
    FallbackAction,
    FallbackKind,
    Handoff,
    HandoffError,
    Problem,
    TransferMode,
    destination_uri_problem,
)

RESOLVE_SECONDS = 2.0


HTTP_STATUS = {Problem.INVALID: 422, Problem.TOO_LARGE: 413, Problem.UNKNOWN_CALL: 404,
               Problem.CONFLICT: 409}


def http_status(error: HandoffError) -> int:
    """The HTTP status that says what kind of problem ``error`` is."""
    return HTTP_STATUS[error.problem]


def _sip_uri(value: str) -> str:
    problem = destination_uri_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _identity_uri(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        uri = parse_uri(value)
    except SipParseError as error:
        raise ValueError(f"not a sip:, sips: or tel: URI: {error}") from None
    if uri.scheme not in ("sip", "sips", "tel"):
        raise ValueError("must be a sip:, sips: or tel: URI")
    return value


class CallerIdOptions(BaseModel):
    """What the human's phone shows: the caller, another identity, or a trunk number."""

    mode: CallerIdMode = CallerIdMode.ORIGINAL
    uri: str | None = None  # override/trunk: the identity to present (sip:, sips:, tel:)
    diversion: bool = False
    history_info: bool = False

    _check_uri = field_validator("uri")(classmethod(lambda cls, value: _identity_uri(value)))

    def build(self) -> CallerId:
        return CallerId(self.mode, self.uri, self.diversion, self.history_info)


class Attempt(BaseModel):
    """Where to send the caller and how (the request itself and each fallback step)."""

    to: str = Field(description="sip: or sips: URI of the human, queue or agent")
    mode: TransferMode = TransferMode.BLIND
    timeout: float = Field(30.0, gt=0, le=600, description="ring or NOTIFY timeout, seconds")
    whisper: str | None = Field(None, max_length=2000,
                                description="warm/attended: what the human hears first "
                                            "(default: a summary of the context)")
    accept: Acceptance = Field(
        Acceptance.NONE, description="warm: the human accepts by pressing 1 or by speaking first")
    accept_timeout: float = Field(10.0, gt=0, le=120)
    connect: ConnectBy = Field(
        ConnectBy.BRIDGE, description="warm: keep the media (bridge) or send the caller's phone to "
                              "the human with REFER/Replaces when it supports that")

    probe: bool = Field(False, description="OPTIONS first; skip the destination unless 2xx")

    _check_to = field_validator("to")(classmethod(lambda cls, value: _sip_uri(value)))

    def destination(self) -> Destination:
        return Destination(self.to, self.mode, self.timeout, self.whisper, self.accept,
                           self.accept_timeout, self.connect, self.probe)


class FallbackStep(Attempt):
    """Another destination to try when the one before fails."""

    mode: TransferMode = TransferMode.BRIDGE


class ActionStep(BaseModel):
    """A fallback that is not another destination."""

    action: Literal["ai", "voicemail", "callback"]
    max_seconds: float = Field(60.0, gt=0, le=600, description="voicemail: longest message")
    delay_seconds: float = Field(3600.0, gt=0, le=30 * 86400,
                                 description="callback: when, from now")
    at: float | None = Field(None, description="callback: when, as Unix time")

    def build(self) -> FallbackAction:
        return FallbackAction(FallbackKind(self.action), self.max_seconds, self.delay_seconds,
                              self.at)


class TransferRequest(Attempt):
    final: bool = Field(True, description="False: the caller returns to the AI afterwards")
    announce: str | None = Field(None, max_length=500,
                                 description="said to the caller before the transfer starts")
    fallback: list[FallbackStep | ActionStep | Literal["ai", "voicemail", "callback"]] = Field(
        default_factory=list,
        description="tried in order: other destinations, then 'voicemail', 'callback' or "
                    "'ai' (back to the AI, also what happens when the list runs out)")
    context: dict[str, Any] = Field(default_factory=dict,
                                    description="what the human should know (JSON object)")
    caller_id: CallerIdOptions = Field(default_factory=lambda: CallerIdOptions())


class ActionModel(BaseModel):
    name: str = Field(max_length=100)
    result: str = Field(max_length=100, description="ok, failed, partial ...")
    detail: str | None = Field(None, max_length=1000)


class AuthModel(BaseModel):
    verified: bool
    method: str | None = Field(None, max_length=100, description="how, never the values")
    level: str | None = Field(None, max_length=20)


class TurnModel(BaseModel):
    """One conversation turn as the AI reports it."""

    speaker: Literal["caller", "ai"]
    text: str = Field("", max_length=10_000)
    started_at: float | None = None
    ended_at: float | None = None
    intent: str | None = Field(None, max_length=100)
    confidence: float | None = Field(None, ge=0, le=1)
    sentiment: float | None = Field(None, ge=-1, le=1)
    slots: dict[str, Any] = Field(default_factory=dict)
    actions: list[ActionModel] = Field(default_factory=list, max_length=100)
    auth: AuthModel | None = None
    dtmf: str | None = Field(None, pattern=r"^[0-9*#A-D]{1,32}$")
    energy: float | None = Field(None, ge=0, le=100)
    language: str | None = Field(None, max_length=35)
    call_type: str | None = Field(None, max_length=50)

    def build(self) -> Turn:
        return Turn(self.speaker, self.text, self.started_at, self.ended_at, self.intent,
                    self.confidence, self.sentiment, self.slots,
                    tuple(Action(a.name, a.result, a.detail) for a in self.actions),
                    None if self.auth is None else AuthState(self.auth.verified,
                                                             self.auth.method, self.auth.level),
                    self.dtmf, self.energy, self.language, self.call_type)


class TurnAccepted(BaseModel):
    fired: list[dict[str, Any]]
    handoff_id: str | None


class CsatModel(BaseModel):
    score: int = Field(ge=1, le=5, description="1 (very unhappy) to 5 (very happy)")


class ResolutionModel(BaseModel):
    resolved: bool


class TransferAccepted(BaseModel):
    handoff_id: str
    status: str


def build_app(engine: CallEngine, api_token: str | None = None,
              records_url: str | None = None) -> FastAPI:
    """The API; with ``api_token`` every request needs ``Authorization: Bearer <token>``,
    except that a handoff's own token (in its Call-Info link) opens that handoff alone."""
    app = FastAPI(title="warmline", summary="Hand live calls from an AI agent to a human.")

    @app.middleware("http")
    async def require_token(request: Request, call_next: Any) -> Any:
        if api_token is None or _bearer(request) == api_token or _opens_its_handoff(request) \
                or request.url.path == "/dashboard":  # the page holds no data itself
            return await call_next(request)
        return JSONResponse({"detail": "Authorization: a Bearer token is needed"}, 401)

    def _opens_its_handoff(request: Request) -> bool:
        parts = request.url.path.strip("/").split("/")
        if request.method != "GET" or len(parts) not in (2, 3) or parts[0] != "handoffs":
            return False
        handoff = engine.handoffs.get(parts[1])
        token = request.query_params.get("token", "")
        return handoff is not None and hmac.compare_digest(token, handoff.token)

    @app.get("/calls")
    async def list_calls() -> list[dict[str, Any]]:
        """Calls warmline holds now, and ended ones it still remembers."""
        return [call.as_dict() for call in engine.calls.values()]

    @app.post("/calls/{call_id}/transfer", status_code=202)
    async def transfer(call_id: Annotated[str, Path()],
                       request: TransferRequest) -> TransferAccepted:
        handoff = _handoff(call_id, request)
        await _check_routable(handoff)
        try:
            engine.transfer(call_id, handoff)
        except HandoffError as error:
            raise HTTPException(http_status(error), str(error)) from None
        return TransferAccepted(handoff_id=handoff.id, status=handoff.status)

    @app.post("/calls/{call_id}/turns", status_code=201)
    async def add_turn(call_id: Annotated[str, Path()], turn: TurnModel) -> TurnAccepted:
        """Report a turn; triggers are evaluated and may start the configured handoff."""
        try:
            result = engine.add_turn(call_id, turn.build())
        except HandoffError as error:
            raise HTTPException(http_status(error), str(error)) from None
        return TurnAccepted(
            fired=[{"trigger": f.trigger, "evidence": f.evidence, "turn": f.turn}
                   for f in result.fired],
            handoff_id=result.handoff.id if result.handoff else None)

    @app.get("/handoffs/{handoff_id}/context")
    async def screen_pop(handoff_id: str, token: str = "") -> dict[str, Any]:
        """The full context packet for the human's desktop (the Call-Info link)."""
        handoff = engine.handoffs.get(handoff_id)
        if handoff is None:
            raise HTTPException(404, f"no handoff {handoff_id}")
        if not hmac.compare_digest(token, handoff.token):
            raise HTTPException(403, "token: missing or wrong for this handoff")
        return {"handoff_id": handoff.id, "packet": handoff.packet, "context": handoff.context}

    @app.post("/calls/{call_id}/csat", status_code=201)
    async def csat(call_id: str, body: CsatModel) -> dict[str, Any]:
        """A satisfaction score (API or post-call survey) for the KPIs."""
        _known(call_id)
        engine.record(call_id, "call.csat", {"score": body.score})
        return {"call_id": call_id, "score": body.score}

    @app.post("/calls/{call_id}/resolution", status_code=201)
    async def resolution(call_id: str, body: ResolutionModel) -> dict[str, Any]:
        """Whether the caller's issue was resolved on this call (first-call resolution)."""
        _known(call_id)
        engine.record(call_id, "call.resolution", {"resolved": body.resolved})
        return {"call_id": call_id, "resolved": body.resolved}

    @app.get("/kpis")
    async def kpis(days: float = 31.0) -> dict[str, Any]:
        """The five KPIs over the last ``days``, overall and per intent (zeros when empty)."""
        if records_url is None:
            raise HTTPException(404, "records are not kept (no database configured)")
        if not 0 < days <= 3660:
            raise HTTPException(422, "days: must be in (0, 3660]")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, kpi_report, records_url, days)

    @app.get("/kpis/daily")
    async def kpis_daily(days: int = 14, intent: str | None = None) -> list[dict[str, Any]]:
        """Calls and transfers per day (UTC) for the dashboard's chart."""
        if records_url is None:
            raise HTTPException(404, "records are not kept (no database configured)")
        if not 0 < days <= 366:
            raise HTTPException(422, "days: must be in (0, 366]")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, daily_report, records_url, days, intent)

    @app.get("/handoffs")
    async def recent_handoffs(limit: int = 50) -> list[dict[str, Any]]:
        """The latest handoffs, newest first, with outcome and summary."""
        if not 0 < limit <= 1000:
            raise HTTPException(422, "limit: must be in (0, 1000]")
        recent = list(engine.handoffs.values())[-limit:]
        return [_handoff_row(handoff) for handoff in reversed(recent)]

    @app.websocket("/calls/{call_id}/stream")
    async def media_stream(socket: WebSocket, call_id: str, token: str = "") -> None:
        """A bot connects here for a call's media (Twilio Media Streams framing)."""
        call = engine.calls.get(call_id)
        if api_token is not None and not hmac.compare_digest(token, api_token):
            await socket.close(code=1008, reason="token: missing or wrong")
            return
        if call is None or call.ended:
            await socket.close(code=1008, reason=f"no live call {call_id}")
            return
        await socket.accept()
        await run_stream(engine, call, _ServerSocket(socket))

    @app.get("/dashboard", response_class=HTMLResponse)
    async def dashboard() -> str:
        return PAGE

    @app.get("/metrics")
    async def metrics() -> Response:
        """Prometheus text format: counters and the trigger-to-first-word histogram."""
        return Response(metrics_text(engine), media_type="text/plain; version=0.0.4")

    def _known(call_id: str) -> None:
        if call_id not in engine.calls:
            raise HTTPException(404, f"no call {call_id}")

    @app.get("/callbacks")
    async def list_callbacks() -> list[dict[str, Any]]:
        """Callbacks promised to callers nobody could take (newest last)."""
        return [asdict(scheduled) for scheduled in engine.callbacks]

    @app.get("/handoffs/{handoff_id}")
    async def get_handoff(handoff_id: str) -> dict[str, Any]:
        """Status, events, context and packet (the screen-pop, with the handoff's token)."""
        handoff = engine.handoffs.get(handoff_id)
        if handoff is None:
            raise HTTPException(404, f"no handoff {handoff_id}")
        return handoff.as_dict()

    return app


async def _check_routable(handoff: Handoff) -> None:
    """422 for a destination whose host does not resolve (it could never ring)."""
    loop = asyncio.get_running_loop()
    steps = [handoff.first, *handoff.fallback]
    for index, step in enumerate(steps):
        if not isinstance(step, Destination):
            continue
        uri = parse_uri(step.uri)
        host = uri.host.strip("[]") if isinstance(uri, SipUri) else ""
        if not host or _is_address(host):
            continue
        where = "to" if index == 0 else f"fallback[{index - 1}].to"
        try:
            await asyncio.wait_for(loop.getaddrinfo(host, None), RESOLVE_SECONDS)
        except (OSError, TimeoutError):
            raise HTTPException(422, f"{where}: host {host!r} does not resolve") from None


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


class _ServerSocket:
    """FastAPI's WebSocket with the shape run_stream expects (send, close, iterate)."""

    def __init__(self, socket: WebSocket) -> None:
        self.socket = socket

    async def send(self, text: str) -> None:
        await self.socket.send_text(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.socket.close(code=code, reason=reason)

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[str | bytes]:
        while True:
            message = await self.socket.receive()
            if message["type"] == "websocket.disconnect":
                return
            yield message.get("text") or message.get("bytes") or b""


def _handoff_row(handoff: Handoff) -> dict[str, Any]:
    packet = handoff.packet or {}
    attempt = handoff.attempt or handoff.first
    return {"id": handoff.id, "call_id": handoff.call_id, "status": handoff.status,
            "to": attempt.uri if attempt else None, "reason": handoff.reason,
            "intent": (packet.get("intent") or {}).get("name"),
            "summary": packet.get("summary"), "sip_status": handoff.sip_status}


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _handoff(call_id: str, request: TransferRequest) -> Handoff:
    fallback: list[Destination | FallbackAction | str] = [
        step.destination() if isinstance(step, FallbackStep)
        else step.build() if isinstance(step, ActionStep) else step
        for step in request.fallback]
    try:
        caller_id = request.caller_id.build()
    except HandoffError as error:
        raise HTTPException(http_status(error), str(error)) from None
    return Handoff(call_id, request.destination(), final=request.final, fallback=fallback,
                   context=request.context, caller_id=caller_id, announce=request.announce)


class EmbeddedHttpServer(uvicorn.Server):
    """uvicorn inside warmline's loop; warmline's own signal handlers stop both."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def start_http(app: FastAPI, host: str, port: int) -> tuple[EmbeddedHttpServer,
                                                                  asyncio.Task[None]]:
    """Serve ``app`` on a socket bound here, so a taken port is an OSError, not an exit."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(f"--http {host}:{port}: {error.strerror}") from None
    server = EmbeddedHttpServer(uvicorn.Config(app, log_level="warning", lifespan="off",
                                               access_log=False))
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    return server, task


async def stop_http(server: EmbeddedHttpServer, task: asyncio.Task[None]) -> None:
    server.should_exit = True
    await task
