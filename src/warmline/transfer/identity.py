"""What the human's side sees of the caller: the INVITE's identity headers, Refer-To headers.

Caller ID lost in a transfer is a top complaint: the human's phone shows the
AI's number, not the customer's. These helpers build the identity the
handoff asked for (see :class:`CallerId`) and carry the handoff id where a
transferee's own INVITE will take it along.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

from warmline.transfer.handoff import CallerId, CallerIdMode


@dataclass(frozen=True, slots=True)
class Identity:
    """The From and the identity headers of an INVITE to the human."""

    from_: str
    headers: tuple[tuple[str, str], ...]


def with_uri_header(uri: str, name: str, value: str) -> str:
    """``uri`` carrying a header for the INVITE the transferee sends (RFC 3261 §19.1.1).

    UAs that honour Refer-To headers copy it into their INVITE, so the human's
    side sees the handoff id even on a blind transfer.
    """
    separator = "&" if "?" in uri else "?"
    return f"{uri}{separator}{quote(name, safe='')}={quote(value, safe='')}"


def identity_for(caller_id: CallerId, original: str, asserted: str | None, dialled: str,
                 destination: str) -> Identity:
    """The human's INVITE identity (see CallerId).

    ``original`` is the caller's From as a name-addr, ``asserted`` their
    P-Asserted-Identity if any, ``dialled`` what they called (the AI's URI,
    the diverting party).
    """
    headers: list[tuple[str, str]] = []
    from_ = original
    if caller_id.mode is CallerIdMode.ORIGINAL:
        headers.append(("P-Asserted-Identity", asserted or original))
    else:
        from_ = f"<{caller_id.uri}>"
        headers.append(("P-Asserted-Identity", from_))
        if caller_id.mode is CallerIdMode.TRUNK:
            headers.append(("X-Warmline-Original-Caller", asserted or original))
    if caller_id.diversion:
        headers.append(("Diversion", f"<{dialled}>;reason=unconditional;counter=1"))
    if caller_id.history_info:
        headers.append(("History-Info", f"<{dialled}>;index=1,<{destination}>;index=1.1;mp=1"))
    return Identity(from_, tuple(headers))
