"""What the human's side sees of the caller: the INVITE's identity headers, Refer-To headers.

Caller ID lost in a transfer is a top complaint: the human's phone shows the
AI's number, not the customer's. These helpers build the identity the
handoff asked for (see :class:`CallerId`) and carry the handoff id where a
transferee's own INVITE will take it along.
"""

from __future__ import annotations

from urllib.parse import quote

from warmline.calls.handoff import CallerId
from warmline.sip.headers import NameAddr
from warmline.sip.session import Session


def with_uri_header(uri: str, name: str, value: str) -> str:
    """``uri`` carrying a header for the INVITE the transferee sends (RFC 3261 §19.1.1).

    UAs that honour Refer-To headers copy it into their INVITE, so the human's
    side sees the handoff id even on a blind transfer.
    """
    separator = "&" if "?" in uri else "?"
    return f"{uri}{separator}{quote(name, safe='')}={quote(value, safe='')}"


def identity_headers(caller: Session, caller_id: CallerId, destination: str
                     ) -> tuple[NameAddr | str, list[tuple[str, str]]]:
    """The From and identity headers of the INVITE to the human (see CallerId)."""
    original = NameAddr(caller.remote_party.uri, caller.remote_party.display_name)
    asserted = caller.invite.get("p-asserted-identity")
    headers: list[tuple[str, str]] = []
    identity: NameAddr | str = original
    if caller_id.mode == "original":
        headers.append(("P-Asserted-Identity", asserted or str(original)))
    else:
        identity = f"<{caller_id.uri}>"
        headers.append(("P-Asserted-Identity", identity))
        if caller_id.mode == "trunk":
            headers.append(("X-Warmline-Original-Caller", asserted or str(original)))
    diverter = caller.invite.uri  # the number the caller dialled: the AI
    if caller_id.diversion:
        headers.append(("Diversion", f"<{diverter}>;reason=unconditional;counter=1"))
    if caller_id.history_info:
        headers.append(("History-Info", f"<{diverter}>;index=1,<{destination}>;index=1.1;mp=1"))
    return identity, headers
