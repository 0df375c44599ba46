"""Who may use the API: the holder of the API token, or of one call's or handoff's own token.

With an API token, every HTTP request needs ``Authorization: Bearer <token>``
or gets 401, with three exceptions, each a narrow key instead of the master one:

- The human's desktop holds only the link in the Call-Info of the INVITE that
  rang it (``/handoffs/{id}?token=``): a handoff's own token opens GET
  /handoffs/{id} and /handoffs/{id}/context for that handoff and nothing else.
- A bot holds only its call's token (sent in the stream's ``start`` message):
  as a Bearer token or ``?token=`` it opens /calls/{id}/... for that call alone
  (its media stream, turns, transfer, CSAT, hang-up), and as the Basic password
  Twilio's update of that call (api/twilio.py), so a leaked bot cannot touch
  the other calls or read the records.
- In a cluster the screen-pop link works on every node: a handoff another node
  holds is checked against its token in the cluster's registry (Redis).
- /dashboard, /healthz and /readyz are open: the page holds no data (it calls
  the API with the token in its own URL) and the probes say only yes or no.

HTTP middleware never sees a WebSocket, so the media stream checks the token
itself (api/stream.py), with the same comparison.
"""

from __future__ import annotations

import base64
import hmac
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.requests import HTTPConnection

from warmline.api.dependencies import HttpRefusals
from warmline.calls.call import Call, EndedCall
from warmline.transfer.handoff import ShownHandoff

OPEN_PATHS = frozenset({"/dashboard", "/healthz", "/readyz"})


def same_secret(given: str | None, expected: str) -> bool:
    """Whether ``given`` is ``expected``, in constant time so response times do not tell
    an attacker how much of a guess was right. Compared as UTF-8 bytes: hmac refuses
    non-ASCII strings with a TypeError, which would answer a stray character with a 500."""
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


SharedToken = Callable[[str], Awaitable[str | None]]  # handoff id -> its token, cluster-wide
FindCall = Callable[[str], Call | EndedCall | None]  # call id -> the call, whole or as listed
FindHandoff = Callable[[str], ShownHandoff | None]  # handoff id -> it, whole or as recorded


def install_auth(app: FastAPI, api_token: str, find_handoff: FindHandoff,
                 find_call: FindCall, refusals: HttpRefusals,
                 shared_token: SharedToken | None = None) -> None:
    """Refuse (401, counted) each HTTP request that the token rules above do not let in.
    ``shared_token``: a handoff's token from the cluster, for handoffs held elsewhere."""

    async def require_token(request: Request, call_next: RequestResponseEndpoint) -> Response:
        if (same_secret(bearer(request), api_token) or _opens_its_handoff(request, find_handoff)
                or _opens_its_call(request, find_call) or request.url.path in OPEN_PATHS
                or await _opens_shared_handoff(request, find_handoff, shared_token)):
            return await call_next(request)
        refusals.unauthorised += 1
        return JSONResponse({"detail": "Authorization: a Bearer token is needed"}, 401)

    app.add_middleware(BaseHTTPMiddleware, dispatch=require_token)


def bearer(request: HTTPConnection) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def basic_password(request: HTTPConnection) -> str | None:
    """The password of ``Authorization: Basic`` (how a Twilio client sends its key)."""
    scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        pair = base64.b64decode(encoded.strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        return None
    return pair.partition(":")[2]


def call_token_opens(connection: HTTPConnection, call: Call | EndedCall | None) -> bool:
    """Whether ``connection`` carries ``call``'s own token (Bearer, ``?token=``, or the
    Basic password a Twilio client sends)."""
    if call is None:
        return False
    given = bearer(connection) or connection.query_params.get("token") \
        or basic_password(connection)
    return same_secret(given, call.token)


def _opens_its_call(request: Request, find_call: FindCall) -> bool:
    """A request under /calls/{id}/, or Twilio's update of call {id} (api/twilio.py),
    carrying that call's token."""
    call_id = call_in_path(request.url.path.strip("/").split("/"))
    return call_id is not None and call_token_opens(request, find_call(call_id))


def call_in_path(parts: list[str]) -> str | None:
    if len(parts) >= 3 and parts[0] == "calls":
        return parts[1]
    if len(parts) == 5 and parts[:2] == ["2010-04-01", "Accounts"] and parts[3] == "Calls" \
            and parts[4].endswith(".json"):
        return parts[4].removesuffix(".json")
    return None


def _handoff_in_path(request: Request) -> str | None:
    parts = request.url.path.strip("/").split("/")
    if request.method != "GET" or len(parts) not in (2, 3) or parts[0] != "handoffs":
        return None
    return parts[1]


async def _opens_shared_handoff(request: Request, find_handoff: FindHandoff,
                                shared_token: SharedToken | None) -> bool:
    """The same rule for a handoff another node of the cluster holds."""
    handoff_id = _handoff_in_path(request)
    if shared_token is None or handoff_id is None or find_handoff(handoff_id) is not None:
        return False
    token = await shared_token(handoff_id)
    return token is not None and same_secret(request.query_params.get("token", ""), token)


def _opens_its_handoff(request: Request, find_handoff: FindHandoff) -> bool:
    """A GET of /handoffs/{id} or /handoffs/{id}/<view> carrying that handoff's token."""
    handoff_id = _handoff_in_path(request)
    if handoff_id is None:
        return False
    handoff = find_handoff(handoff_id)
    return handoff is not None and same_secret(request.query_params.get("token", ""),
                                               handoff.token)
