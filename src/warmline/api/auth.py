"""Who may use the API: the holder of the API token, or of one handoff's own token.

With an API token, every HTTP request needs ``Authorization: Bearer <token>``
or gets 401, with two exceptions. The human's desktop holds no API token, only
the link in the Call-Info of the INVITE that rang it (``/handoffs/{id}?token=``),
so a handoff's own token opens GET /handoffs/{id} and /handoffs/{id}/context for
that handoff and nothing else. And /dashboard is open, because the page holds
no data: it calls the API with the token given in its own URL.

HTTP middleware never sees a WebSocket, so the media stream checks the token
itself (api/stream.py), with the same comparison.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from warmline.transfer.handoff import Handoff

OPEN_PATHS = frozenset({"/dashboard"})


def same_secret(given: str | None, expected: str) -> bool:
    """Whether ``given`` is ``expected``, in constant time so response times do not tell
    an attacker how much of a guess was right. Compared as UTF-8 bytes: hmac refuses
    non-ASCII strings with a TypeError, which would answer a stray character with a 500."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def install_auth(app: FastAPI, api_token: str, handoffs: Mapping[str, Handoff]) -> None:
    """Refuse (401) each HTTP request to ``app`` that the token rules above do not let in."""

    async def require_token(request: Request, call_next: RequestResponseEndpoint) -> Response:
        if (same_secret(_bearer(request), api_token) or _opens_its_handoff(request, handoffs)
                or request.url.path in OPEN_PATHS):
            return await call_next(request)
        return JSONResponse({"detail": "Authorization: a Bearer token is needed"}, 401)

    app.add_middleware(BaseHTTPMiddleware, dispatch=require_token)


def _bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _opens_its_handoff(request: Request, handoffs: Mapping[str, Handoff]) -> bool:
    """A GET of /handoffs/{id} or /handoffs/{id}/<view> carrying that handoff's token."""
    parts = request.url.path.strip("/").split("/")
    if request.method != "GET" or len(parts) not in (2, 3) or parts[0] != "handoffs":
        return False
    handoff = handoffs.get(parts[1])
    return handoff is not None and same_secret(request.query_params.get("token", ""),
                                               handoff.token)
