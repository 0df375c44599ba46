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
from warmline.transfer.handoff import Destination, Handoff
from warmline.transport.resolver import ResolutionError


async def check_routable(handoff: Handoff, engine: CallEngine) -> None:
    """422 naming ``to`` or ``fallback[i].to`` for the first destination that cannot be
    reached: no trunk for a tel: number, or a name that does not resolve."""
    steps = [handoff.first, *handoff.fallback]
    for index, step in enumerate(steps):
        if not isinstance(step, Destination):
            continue
        where = "to" if index == 0 else f"fallback[{index - 1}].to"
        try:
            await engine.reachable(step.uri)
        except NoRoute as error:
            raise HTTPException(422, f"{where}: {error}") from None
        except ResolutionError as error:
            raise HTTPException(422, f"{where}: {error.name} does not resolve "
                                     f"({error.reason})") from None
