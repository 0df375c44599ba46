"""The context on the wire: compact SIP headers within a budget, and a signed webhook.

Peers cut what does not fit (256 bytes of UUI, 1,024 characters per header)
and a value with a CR or LF in it would let a caller's words forge header
lines. So the INVITE to the human carries only what fits and is safe: the
handoff id, a few compact X- headers (intent, sentiment, verified,
priority), User-to-User (RFC 7433: hex, with encoding and purpose) holding a
compact JSON digest, and Call-Info with the URL of the full packet. Every
value is reduced to printable ASCII (anything else percent-encoded) and cut
to the budget; the full packet is always one URL away.

The webhook gives the agent desktop or CRM the full packet before the phone
rings: POSTed with an HMAC-SHA256 signature over timestamp and body, and
awaited up to a timeout. A webhook that fails or is slow never blocks the
transfer: the failure is returned for the records and the call goes on.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

from warmline.transfer.handoff import HANDOFF_HEADER

UUI_PURPOSE = "isdn-uui"


@dataclass(frozen=True)
class HeaderBudget:
    max_header: int = 1024  # characters per header value
    uui_bytes: int = 128  # bytes of UUI before hex encoding (256 hex characters)
    max_total: int = 2048  # all context headers together


_PLAIN_ASCII = re.compile(r"[ -$&-~]*")  # printable ASCII but "%"


def safe_value(text: str, limit: int) -> str:
    """Printable ASCII only (others percent-encoded: no CR/LF/NUL can get through), cut.

    The cut falls between characters, never inside a %XX escape.
    """
    if _PLAIN_ASCII.fullmatch(text):  # the common case (ids, URLs, levels): no escape to cut
        return text[:max(limit, 0)]
    pieces: list[str] = []
    length = 0
    for char in text:
        piece = char if " " <= char <= "~" and char != "%" else quote(char, safe="")
        if length + len(piece) > limit:
            break
        pieces.append(piece)
        length += len(piece)
    return "".join(pieces)


def uui_digest(packet: dict[str, Any], handoff_id: str, limit: int) -> bytes:
    """The packet's essentials as compact JSON, dropping fields until it fits ``limit``."""
    digest: dict[str, Any] = {
        "h": handoff_id,
        "v": 1 if packet["authentication"]["verified"] else 0,
        "i": packet["intent"]["name"],
        "s": packet["sentiment"]["level"],
        "p": packet["priority"],
        "t": (packet["trigger"] or {}).get("name"),
        "m": packet["summary"],
    }
    for optional in ("m", "t", "p", "s", "i"):
        encoded = json.dumps(digest, separators=(",", ":"), ensure_ascii=True).encode()
        if len(encoded) <= limit:
            return encoded
        digest.pop(optional)
    encoded = json.dumps(digest, separators=(",", ":")).encode()
    if len(encoded) > limit:
        raise ValueError(f"context.uui_bytes: {limit} cannot hold even the handoff id")
    return encoded


def sip_headers(packet: dict[str, Any], handoff_id: str, screen_pop: str | None,
                budget: HeaderBudget = HeaderBudget()) -> list[tuple[str, str]]:
    """The context headers for the INVITE to the human, within ``budget``."""
    limit = budget.max_header
    headers = [(HANDOFF_HEADER, safe_value(handoff_id, limit))]
    if packet["intent"]["name"]:
        headers.append(("X-Warmline-Intent", safe_value(str(packet["intent"]["name"]), 64)))
    headers += [
        ("X-Warmline-Sentiment", packet["sentiment"]["level"]),
        ("X-Warmline-Verified", "yes" if packet["authentication"]["verified"] else "no"),
        ("X-Warmline-Priority", safe_value(str(packet["priority"]), 16)),
    ]
    uui = uui_digest(packet, handoff_id, min(budget.uui_bytes, (limit - 48) // 2)).hex()
    headers.append(("User-to-User", f"{uui};encoding=hex;purpose={UUI_PURPOSE}"))
    if screen_pop is not None:
        url = safe_value(screen_pop, limit - 20)
        if urlsplit(url).scheme in ("http", "https"):
            headers.append(("Call-Info", f"<{url}>;purpose=info"))
    total = 0
    kept = []
    for name, value in headers:
        total += len(name) + len(value) + 4
        if total > budget.max_total:
            break  # later headers are the nice-to-have ones
        kept.append((name, value))
    return kept


def decode_uui(value: str) -> dict[str, Any]:
    """The digest back from a User-to-User header value (for tests and receivers)."""
    hex_part = value.split(";", 1)[0].strip()
    decoded: dict[str, Any] = json.loads(bytes.fromhex(hex_part))
    return decoded


def sign(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


@dataclass(frozen=True)
class WebhookResult:
    ok: bool
    status: int | None
    detail: str
    seconds: float


async def send_webhook(url: str, secret: str, packet: dict[str, Any],
                       timeout: float) -> WebhookResult:
    """POST the packet signed (X-Warmline-Signature); never raises, never waits past timeout."""
    import httpx  # only needed by deployments with a webhook

    body = json.dumps(packet, separators=(",", ":")).encode()
    stamp = int(time.time())
    headers = {"Content-Type": "application/json",
               "X-Warmline-Signature": sign(secret, stamp, body)}
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(timeout=timeout) as client:
            response = await asyncio.wait_for(client.post(url, content=body, headers=headers),
                                              timeout)
    except (httpx.HTTPError, TimeoutError, OSError) as error:
        return WebhookResult(False, None, f"{type(error).__name__}: {error}"[:200],
                             time.monotonic() - started)
    ok = 200 <= response.status_code < 300
    return WebhookResult(ok, response.status_code, response.reason_phrase,
                         time.monotonic() - started)
