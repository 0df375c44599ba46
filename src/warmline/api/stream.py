"""The WebSocket a bot connects to for a call's media (Twilio Media Streams framing).

HTTP middleware never sees a WebSocket, so the token is checked here: the
call's own token as ``?token=`` (a bot cannot always set headers on a
WebSocket, and a URL ends up in logs, so it carries a key to this call only),
or the API token as an ``Authorization: Bearer`` header, never in the URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, WebSocket

from warmline.agents.media_stream import run_stream
from warmline.api.auth import bearer, call_token_opens, same_secret
from warmline.api.dependencies import EngineDep, SettingsDep
from warmline.calls.call import Call

router = APIRouter()


@router.websocket("/calls/{call_id}/stream")
async def media_stream(socket: WebSocket, call_id: str, engine: EngineDep,
                       settings: SettingsDep) -> None:
    """A bot connects here for a call's media (Twilio Media Streams framing)."""
    call = engine.known_call(call_id)
    if settings.api_token is not None and not (
            same_secret(bearer(socket), settings.api_token) or call_token_opens(socket, call)):
        await socket.close(code=1008, reason="token: this call's token is needed")
        return
    if not isinstance(call, Call) or call.ended:
        await socket.close(code=1008, reason=f"no live call {call_id}")
        return
    await socket.accept()
    await run_stream(engine, call, _ServerSocket(socket), api_url=_api_url(socket))


def _api_url(socket: WebSocket) -> str:
    """The API's URL as the bot reached it (ws://host:port/... -> http://host:port)."""
    scheme = "https" if socket.url.scheme == "wss" else "http"
    return f"{scheme}://{socket.url.netloc}"


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
