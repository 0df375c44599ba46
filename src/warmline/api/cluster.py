"""The API of any node acts on any call: requests about a call another node owns go there.

A request under /calls/{id}/... (and Twilio's update of call {id}) for a call
this node does not hold is looked up in the cluster's registry (Redis) and
forwarded to the owner's API with the same method, path, query, body and
Authorization; its status and body come back unchanged. Forwarding runs before
auth: the owner checks the token by its own rules, so a bot's call token (which
only the owner knows) works through any node, and a request without a valid
token is refused there (401) as it would be here. An owner that does not
answer is a 502 naming the node; while Redis is unreachable a change to a call
held elsewhere is a 503 saying so (a read falls through to the records). A
forwarded request carries ``X-Warmline-Forwarded-By`` and is never forwarded
again, so two nodes that disagree cannot bounce a request between them.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from warmline.api.auth import SharedToken, bearer, call_in_path, same_secret
from warmline.cluster.registry import Owner, SharedState
from warmline.engine import CallEngine

log = logging.getLogger("warmline.api")
FORWARDED_BY = "x-warmline-forwarded-by"
FORWARD_TIMEOUT = 10.0  # seconds for the owner's answer
PASSED_HEADERS = ("authorization", "content-type", "accept")


def install_forwarding(app: FastAPI, engine: CallEngine, shared: SharedState,
                       api_token: str | None) -> None:
    """Forward the requests about calls other nodes own (added after auth: runs before it)."""
    client = httpx.AsyncClient(timeout=FORWARD_TIMEOUT)

    async def forward(request: Request, call_next: RequestResponseEndpoint) -> Response:
        call_id = _call_of(request.url.path.strip("/").split("/"))
        if call_id is None or engine.known_call(call_id) is not None \
                or FORWARDED_BY in request.headers:
            return await call_next(request)
        if not shared.available:
            return await _unlocated(request, call_next, call_id, api_token)
        try:
            owner = await shared.owner(call_id)
        except (RedisError, OSError):
            return await _unlocated(request, call_next, call_id, api_token)
        if owner is None or owner.node == shared.node_id:
            return await call_next(request)
        return await _to_owner(client, request, owner, shared.node_id, call_id)

    app.add_middleware(BaseHTTPMiddleware, dispatch=forward)


async def _unlocated(request: Request, call_next: RequestResponseEndpoint,
                     call_id: str, api_token: str | None) -> Response:
    """Redis is down: a read is answered here (the records may know the call); a change
    cannot reach the owner, so 503 says why instead of a misleading 404 (to the API
    token's holder: anyone else goes on to auth and its 401)."""
    authorised = api_token is None or same_secret(bearer(request), api_token)
    if request.method == "GET" or not authorised:
        return await call_next(request)
    return JSONResponse({"detail": f"call {call_id} is not on this node and the cluster's "
                                   "registry (Redis) is unreachable: ask the node that "
                                   "holds it"}, 503)


async def _to_owner(client: httpx.AsyncClient, request: Request, owner: Owner, here: str,
                    call_id: str) -> Response:
    if not owner.api_url:
        return JSONResponse({"detail": f"call {call_id} is on node {owner.node}, which "
                                       "published no API URL ([cluster] api_url)"}, 503)
    headers = {name: request.headers[name] for name in PASSED_HEADERS
               if name in request.headers}
    headers[FORWARDED_BY] = here
    url = owner.api_url.rstrip("/") + request.url.path
    try:
        answer = await client.request(request.method, url, params=request.query_params,
                                      content=await request.body(), headers=headers)
    except httpx.HTTPError as error:
        log.warning("call %s: its node %s (%s) did not answer: %s", call_id, owner.node,
                    owner.api_url, error, extra={"call_id": call_id})
        return JSONResponse({"detail": f"call {call_id} is on node {owner.node} "
                                       f"({owner.api_url}), which did not answer: "
                                       f"{type(error).__name__}"}, 502)
    kept = {name: value for name, value in answer.headers.items()
            if name.lower() in ("content-type", "retry-after")}
    kept["X-Warmline-Node"] = owner.node
    return Response(answer.content, answer.status_code, headers=kept)


def _call_of(parts: list[str]) -> str | None:
    """The call a path is about: /calls/{id}, /calls/{id}/..., Twilio's update of it."""
    if len(parts) == 2 and parts[0] == "calls":
        return parts[1]
    return call_in_path(parts)


def shared_token(shared: SharedState) -> SharedToken:
    """A handoff's screen-pop token from the registry (None: unknown, or Redis is down)."""

    async def token(handoff_id: str) -> str | None:
        handoff = await shared_handoff(shared, handoff_id)
        return None if handoff is None else str(handoff.get("token"))

    return token


async def shared_handoff(shared: SharedState | None, handoff_id: str) -> dict[str, Any] | None:
    """A handoff another node holds, as it published it; None when unknown or unreachable."""
    if shared is None or not shared.available:
        return None
    try:
        return await shared.handoff(handoff_id)
    except (RedisError, OSError):
        return None


async def every_call(engine: CallEngine) -> list[dict[str, Any]]:
    """This node's calls (fresh, ended ones too) and the other nodes' live calls."""
    here = [{**call, "node": _node(engine)} for call in engine.call_listing()]
    shared = engine.shared
    if shared is None or not shared.available:
        return here
    try:
        elsewhere = await shared.calls()
    except (RedisError, OSError):
        return here
    mine = {call["id"] for call in here}
    return here + [call for call in elsewhere
                   if call.get("node") != shared.node_id and call.get("id") not in mine]


async def every_callback(engine: CallEngine) -> list[dict[str, Any]]:
    """This node's promises (fresh), then the other nodes' as they last published them."""
    here = [{**row, "node": _node(engine)} for row in engine.callback_book.as_dicts()]
    shared = engine.shared
    if shared is None or not shared.available:
        return here
    try:
        elsewhere = await shared.callbacks()
    except (RedisError, OSError):
        return here
    return here + [row for row in elsewhere if row.get("node") != shared.node_id]


def _node(engine: CallEngine) -> str | None:
    return engine.shared.node_id if engine.shared is not None else None
