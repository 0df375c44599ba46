"""RFC 3262 reliable provisional responses: RSeq, RAck, and when to PRACK.

Carriers and PBXs that need to know a provisional response arrived (early
media on 183, billing on 180) send it reliably (``Require: 100rel`` and an
``RSeq``) and retransmit it until a PRACK acknowledges it; a call whose
reliable 18x is never PRACKed fails after 64*T1. The other way, a caller that
requires 100rel must get any 18x from us reliably. This module is the header
arithmetic, pure; the UA core sends and retransmits.
"""

from __future__ import annotations

from dataclasses import dataclass

from warmline.sip.errors import SipParseError
from warmline.sip.message import Request, Response
from warmline.sip.uri import is_digits

RSEQ_MAX = 2**31 - 1  # RFC 3262 §3: the first RSeq is between 1 and 2**31 - 1


@dataclass(frozen=True, slots=True)
class RAck:
    """What a PRACK acknowledges: the provisional's RSeq and its request's CSeq."""

    rseq: int
    cseq: int
    method: str

    def __str__(self) -> str:
        return f"{self.rseq} {self.cseq} {self.method}"


def wants_reliable(request: Request) -> bool:
    """Whether our provisional responses to ``request`` must be reliable (Require: 100rel)."""
    try:
        return "100rel" in (token.lower() for token in request.require)
    except SipParseError:
        return False


def supports_reliable(request: Request) -> bool:
    """Whether the UAC can take reliable provisionals (100rel in Supported or Require)."""
    try:
        return wants_reliable(request) or "100rel" in (
            token.lower() for token in request.supported)
    except SipParseError:
        return False


def reliable_rseq(response: Response) -> int | None:
    """The RSeq of a reliable provisional response, or None if it is not one."""
    if not 100 < response.status < 200:
        return None
    try:
        required = [token.lower() for token in response.require]
    except SipParseError:
        return None
    value = (response.get("rseq") or "").strip()
    if "100rel" not in required or not is_digits(value) or not 0 < int(value) <= 2**32 - 1:
        return None
    return int(value)


def rack_of(request: Request) -> RAck:
    """The RAck of a PRACK; SipParseError (400) when it is malformed."""
    parts = (request.get("rack") or "").split()
    if len(parts) != 3 or not is_digits(parts[0]) or not is_digits(parts[1]):
        raise SipParseError(f"RAck {request.get('rack')!r} is not 'RSeq CSeq method'")
    return RAck(int(parts[0]), int(parts[1]), parts[2].upper())
