"""The request-time routing check: a destination nothing can reach could never ring.

CallEngine.transfer is synchronous and checks a handoff without the network;
the API routes and resolves each destination (RFC 3263: NAPTR, SRV, A/AAAA,
through the trunks) before handing the request over, so the client hears 422
naming the field now instead of reading a failed handoff later. The answers
are cached, so the transfer that follows does not ask DNS again.
"""

from __future__ import annotations

from fastapi import HTTPException

from warmline.calls.trunks import NoRoute
from warmline.engine import CallEngine
from warmline.transfer.handoff import Destination, Handoff, is_agent_uri
from warmline.transport.resolver import ResolutionError


def check_allowed(handoff: Handoff, engine: CallEngine, first: str = "to") -> None:
    """403 naming ``to`` (or ``first``) or ``fallback[i].to`` for a destination the
    engine's policy does not allow (transfer/policy.py): checked before DNS is asked."""
    policy = engine.destination_policy
    if policy is None:
        return
    for where, step in _destinations(handoff):
        where = first if where == "to" else where
        for uri in step.uris:
            problem = policy.problem(uri, _through_trunk(engine, uri))
            if problem is not None:
                raise HTTPException(403, f"{where}: {problem}")


def _through_trunk(engine: CallEngine, uri: str) -> bool:
    """Whether a call to ``uri`` would go out through a trunk (a carrier or PBX account)."""
    if is_agent_uri(uri):
        return False  # a WebSocket: no trunk carries it
    try:
        return engine.switchboard.trunks.route(uri).trunk is not None
    except (NoRoute, ValueError):
        return False  # not callable at all: check_routable says why (422)


def _destinations(handoff: Handoff) -> list[tuple[str, Destination]]:
    steps = [handoff.first, *handoff.fallback]
    return [("to" if index == 0 else f"fallback[{index - 1}].to", step)
            for index, step in enumerate(steps) if isinstance(step, Destination)]


async def check_routable(handoff: Handoff, engine: CallEngine) -> None:
    """422 naming ``to`` or ``fallback[i].to`` for the first destination that cannot be
    reached: no trunk for a tel: number, or a name that does not resolve."""
    for where, step in _destinations(handoff):
        for uri in step.uris:
            if is_agent_uri(uri):
                continue  # an agent's name was checked by the engine; its socket opens later
            try:
                await engine.reachable(uri)
            except NoRoute as error:
                raise HTTPException(422, f"{where}: {error}") from None
            except ResolutionError as error:
                raise HTTPException(422, f"{where}: {error.name} does not resolve "
                                         f"({error.reason})") from None
