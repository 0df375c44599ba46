"""The request-time DNS check: a destination whose host does not resolve could never ring.

CallEngine.transfer is synchronous and checks a handoff without the network;
the API looks each host up before handing the request over, so the client
hears 422 naming the field now instead of reading a failed handoff later.
An IP address needs no lookup, and a lookup slower than RESOLVE_SECONDS counts
as not resolving.
"""

from __future__ import annotations

import asyncio
import ipaddress

from fastapi import HTTPException

from warmline.sip.uri import SipUri, parse_uri
from warmline.transfer.handoff import Destination, Handoff

RESOLVE_SECONDS = 2.0


async def check_routable(handoff: Handoff) -> None:
    """422 naming ``to`` or ``fallback[i].to`` for the first host that does not resolve."""
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
