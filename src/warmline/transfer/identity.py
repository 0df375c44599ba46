"""What the human's side sees of the caller: the INVITE's identity headers, Refer-To headers.

Caller ID lost in a transfer is a top complaint: the human's phone shows the
AI's number, not the customer's. These helpers build the identity the
handoff asked for (see :class:`CallerId`) and carry the handoff id where a
transferee's own INVITE will take it along.
"""

from __future__ import annotations

from dataclasses import dataclass

from warmline.sip.uri import escape
from warmline.transfer.handoff import CallerId, CallerIdMode

ANONYMOUS = '"Anonymous" <sip:anonymous@anonymous.invalid>'  # RFC 3323 §4.1.1.3


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
    return f"{uri}{separator}{escape(name)}={escape(value)}"


def identity_for(caller_id: CallerId, original: str, asserted: str | None, dialled: str,
                 destination: str, signed: tuple[str, ...] = (),
                 privacy: str | None = None) -> Identity:
    """The human's INVITE identity (see CallerId).

    ``original`` is the caller's From as a name-addr, ``asserted`` their
    P-Asserted-Identity if a trusted peer sent it, ``dialled`` what they called
    (the AI's URI, the diverting party), ``signed`` their Identity headers
    (RFC 8224) and ``privacy`` their Privacy header (RFC 3323).

    The caller's signed identity travels only with their own caller ID: it is
    copied as it came (never re-signed or forged) when the human sees the
    original caller, and left out when the From is a trunk number or an
    override, which a PASSporT for the caller would not match (the carrier
    re-signs those, RFC 8946's div PASSporT). A caller who asked for privacy
    (id or user) is shown as anonymous in From; the asserted identity still
    travels for the human's trusted side, with the Privacy header.
    """
    headers: list[tuple[str, str]] = []
    from_ = original
    if caller_id.mode is CallerIdMode.ORIGINAL:
        headers.append(("P-Asserted-Identity", asserted or original))
        if caller_id.identity:
            headers += [("Identity", value) for value in signed]
        if _private(privacy):
            from_ = ANONYMOUS
    else:
        from_ = f"<{caller_id.uri}>"
        headers.append(("P-Asserted-Identity", from_))
        if caller_id.mode is CallerIdMode.TRUNK:
            headers.append(("X-Warmline-Original-Caller", asserted or original))
    if caller_id.diversion:
        headers.append(("Diversion", f"<{dialled}>;reason=unconditional;counter=1"))
    if caller_id.history_info:
        headers.append(("History-Info", f"<{dialled}>;index=1,<{destination}>;index=1.1;mp=1"))
    if privacy:
        headers.append(("Privacy", privacy))
    return Identity(from_, tuple(headers))


def _private(privacy: str | None) -> bool:
    """Privacy asks to hide who the caller is (RFC 3323 §4.2: id, user, header)."""
    values = {value.strip().lower() for value in (privacy or "").replace(",", ";").split(";")}
    return bool(values & {"id", "user", "header"})
