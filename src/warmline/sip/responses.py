"""Building responses, including stateless error replies to requests that failed to parse."""

from __future__ import annotations

from warmline.sip.errors import SipParseError
from warmline.sip.message import Request, Response


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
) -> Response:
    """A response copying Via, From, To, Call-ID and CSeq (RFC 3261 §8.2.6.2)."""
    to = request.get("to") or ""
    if to_tag is not None and status != 100 and ";tag=" not in to.replace(" ", "").lower():
        to = f"{to};tag={to_tag}"
    base = [(name, value) for name, value in request.headers if name == "via"]
    base += [
        ("from", request.get("from") or ""),
        ("to", to),
        ("call-id", request.get("call-id") or ""),
        ("cseq", request.get("cseq") or ""),
    ]
    return Response(status, reason, base + (headers or []), body)


def salvage_headers(data: bytes) -> list[tuple[str, str]] | None:
    """Pull raw Via/From/To/Call-ID/CSeq out of a request the framer rejected.

    Lets the core answer 400 (with the reason) to a request whose body
    framing or fields are broken, instead of dropping it silently. Returns
    None when the bytes do not even look like a request.
    """
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace")
    lines = head.replace("\r\n", "\n").split("\n")
    if not lines or lines[0].startswith("SIP/") or " SIP/" not in lines[0]:
        return None
    wanted = {"via": "via", "v": "via", "from": "from", "f": "from", "to": "to", "t": "to",
              "call-id": "call-id", "i": "call-id", "cseq": "cseq"}
    found: list[tuple[str, str]] = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        key = wanted.get(name.strip().lower())
        if colon and key:
            found.append((key, value.strip()))
    names = {name for name, _ in found}
    if not {"via", "from", "to", "call-id", "cseq"} <= names:
        return None
    return found


def error_reply(headers: list[tuple[str, str]], error: SipParseError) -> Response:
    """A stateless reply to a broken request: the status and reason from the error."""
    reason = error.reason.replace("\r", " ").replace("\n", " ")[:200]
    return Response(error.status, reason, headers)
