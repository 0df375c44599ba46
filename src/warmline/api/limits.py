"""What one HTTP request may cost: a body size cap, and 422s that never become 500s.

Every route takes JSON bodies of a few kilobytes; without a cap, a client
could post 30 MB six times and leave the process 800 MB larger for good
(Python rarely gives such memory back). The cap is checked on the declared
Content-Length before a byte is read, and counted while a chunked body
streams in, so neither form gets past it: 413 naming the limit.

JSON allows neither NaN nor Infinity, but Python's parser takes ``NaN`` and
turns ``1e400`` into infinity; pydantic then refuses the value and echoes it
in its 422, which the JSON encoder cannot write: a 500 with a traceback. The
handler here answers the same 422 with each refused input as text.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from warmline.api.dependencies import HttpRefusals


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes (WebSockets untouched).

    A chunked body over the cap is answered 413 the moment it passes the cap; the
    application then sees the body end there, so whatever it was doing with it
    stops, and anything it still tries to send is dropped.
    """

    def __init__(self, app: ASGIApp, limit: int, refusals: HttpRefusals) -> None:
        self.app = app
        self.limit = limit
        self.refusals = refusals

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._too_large(scope, receive, send)
            return
        received = 0
        started = refused = False

        async def counting_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit and not started:
                    refused = True
                    await self._too_large(scope, receive, send)
                    # the body ends here for the app: it fails to parse it and answers
                    # (dropped below) instead of raising a disconnect into the log
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 went already
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counting_receive, tracking_send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.refusals.body_too_large += 1
        response = JSONResponse(
            {"detail": f"body: larger than the {self.limit} bytes allowed "
                       "([limits] http_body)"}, 413, headers={"Connection": "close"})
        await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def install_limits(app: FastAPI, body_limit: int, refusals: HttpRefusals) -> None:
    """The body cap and JSON-safe 422s on ``app``."""
    app.add_middleware(BodyLimit, limit=body_limit, refusals=refusals)
    app.add_exception_handler(RequestValidationError, _validation_error)


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    return JSONResponse({"detail": [_printable(item) for item in error.errors()]}, 422)


def _printable(item: Any) -> Any:
    """One pydantic error with values JSON cannot carry (NaN, inf, bytes) made text."""
    if isinstance(item, dict):
        return {key: _printable(value) for key, value in item.items() if key != "ctx"
                } | ({"ctx": _printable({k: str(v) for k, v in item["ctx"].items()})}
                     if isinstance(item.get("ctx"), dict) else {})
    if isinstance(item, list | tuple):
        return [_printable(value) for value in item]
    if isinstance(item, float) and not math.isfinite(item):
        return str(item)
    if isinstance(item, bytes):
        return item.decode("utf-8", "replace")
    return item
