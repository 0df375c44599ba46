"""Typed SIP header values (RFC 3261 §20, RFC 3515, RFC 3891, RFC 3892).

Messages keep raw header text; these functions turn a value into a typed
object on demand and back. Each parser is strict where a wrong answer would
route a call wrongly (addresses, CSeq, Via, Replaces) and raises
:class:`SipParseError` with a reason that can go straight into a 400.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from warmline.sip.errors import SipParseError
from warmline.sip.uri import Params, SipUri, Uri, is_digits, param_value, parse_uri

COMPACT_FORMS = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "r": "refer-to",
    "b": "referred-by",
    "o": "event",
    "u": "allow-events",
    "x": "session-expires",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
    "y": "identity",
}

_CANONICAL_SPECIAL = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "mime-version": "MIME-Version",
    "rack": "RAck",
    "rseq": "RSeq",
    "min-se": "Min-SE",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
    "user-to-user": "User-to-User",
    "p-asserted-identity": "P-Asserted-Identity",
}

# Headers whose grammar is a comma-separated list (RFC 3261 §7.3.1): only
# these may be split on commas. From, To, Date and the auth headers may not.
LIST_HEADERS = frozenset(
    {
        "via", "contact", "route", "record-route", "allow", "supported", "require",
        "proxy-require", "unsupported", "accept", "accept-encoding", "accept-language",
        "allow-events", "content-encoding", "in-reply-to", "warning", "call-info",
        "alert-info", "error-info", "reason", "p-asserted-identity", "history-info",
        "diversion", "path", "service-route",
    }
)

# Headers that must appear at most once; a second copy is a 400 (RFC 4475 §3.1.2.x).
SINGLE_HEADERS = frozenset(
    {"call-id", "cseq", "from", "to", "content-length", "max-forwards", "content-type"}
)

_VIA_RE = re.compile(
    r"^\s*([^/\s]+)\s*/\s*([^/\s]+)\s*/\s*([^\s;/]+)\s+([^\s;]+(?:\s*:\s*\d+)?)\s*(;.*)?$",
    re.DOTALL,
)
_MAX_CSEQ = 2**31 - 1
MAGIC_COOKIE = "z9hG4bK"


def canonical_name(lowered: str) -> str:
    """Display form of a lower-case header name (``call-id`` -> ``Call-ID``), memoized."""
    known = _CANONICAL_SPECIAL.get(lowered)
    if known is None:
        known = "-".join(part.capitalize() for part in lowered.split("-"))
        if len(_CANONICAL_SPECIAL) < 4096:
            _CANONICAL_SPECIAL[lowered] = known
    return known


_TOKEN_RE = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


def is_token(text: str) -> bool:
    return _TOKEN_RE.fullmatch(text) is not None


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, honouring quotes and <...>."""
    if "," not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    parts: list[str] = []
    depth = 0
    quoted = False
    escaped = False
    start = 0
    for index, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            depth += 1
        elif ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0:
            parts.append(value[start:index].strip())
            start = index + 1
    parts.append(value[start:].strip())
    return [part for part in parts if part]


def read_quoted(text: str, start: int) -> tuple[str, int]:
    """Read a quoted-string starting at ``text[start] == '"'``.

    Returns the unescaped content and the index just past the closing quote.
    """
    out: list[str] = []
    index = start + 1
    while index < len(text):
        ch = text[index]
        if ch == "\\":
            if index + 1 >= len(text):
                break
            out.append(text[index + 1])
            index += 2
            continue
        if ch == '"':
            return "".join(out), index + 1
        out.append(ch)
        index += 1
    raise SipParseError("unterminated quoted string")


def quote_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_SIMPLE_PARAMS = re.compile(r"(?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[^;\s\"]+)?)*")


def parse_header_params(text: str) -> Params:
    """Parse ``;name=value;flag`` after a header's main value (values may be quoted)."""
    if _SIMPLE_PARAMS.fullmatch(text):  # no quotes, no whitespace: the usual case
        return tuple(_simple_pair(item) for item in text[1:].split(";")) if text else ()
    pairs: list[tuple[str, str | None]] = []
    index = 0
    length = len(text)
    while index < length:
        while index < length and text[index] in " \t":
            index += 1
        if index >= length:
            break
        if text[index] != ";":
            raise SipParseError(f"unexpected {text[index:]!r} in header parameters")
        index += 1
        end = index
        while end < length and text[end] not in ";=":
            end += 1
        name = text[index:end].strip()
        if not is_token(name):
            raise SipParseError(f"invalid header parameter name {name!r}")
        index = end
        value: str | None = None
        if index < length and text[index] == "=":
            index += 1
            while index < length and text[index] in " \t":
                index += 1
            if index < length and text[index] == '"':
                content, index = read_quoted(text, index)
                value = quote_string(content)
            else:
                end = index
                while end < length and text[end] != ";":
                    end += 1
                value = text[index:end].strip()
                index = end
                if not value:
                    raise SipParseError(f"empty value for header parameter {name!r}")
        pairs.append((name.lower(), value))
    return tuple(pairs)


def _simple_pair(item: str) -> tuple[str, str | None]:
    name, sep, value = item.partition("=")
    return (name.lower(), value if sep else None)


def format_header_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


def has_param(params: Params, name: str) -> bool:
    return any(key == name for key, _ in params)


def set_param(params: Params, name: str, value: str | None) -> Params:
    kept = tuple((k, v) for k, v in params if k != name)
    return (*kept, (name, value))


class NameAddr(NamedTuple):
    """A From/To/Contact/Route/Refer-To style value: display name, URI, params."""

    uri: Uri
    display_name: str | None = None
    params: Params = ()

    @property
    def tag(self) -> str | None:
        return param_value(self.params, "tag")

    @property
    def sip_uri(self) -> SipUri:
        if not isinstance(self.uri, SipUri):
            raise SipParseError(f"expected a SIP URI, got {self.uri}", status=416)
        return self.uri

    def param(self, name: str) -> str | None:
        return param_value(self.params, name.lower())

    def with_param(self, name: str, value: str | None) -> NameAddr:
        return NameAddr(self.uri, self.display_name, set_param(self.params, name, value))

    def with_tag(self, tag: str) -> NameAddr:
        return self.with_param("tag", tag)

    def __str__(self) -> str:
        display = ""
        if self.display_name:
            name = self.display_name
            display = (name if all(is_token(w) for w in name.split(" ")) else quote_string(name))
            display += " "
        return f"{display}<{self.uri}>{format_header_params(self.params)}"


_NAME_ADDR_CACHE: dict[str, NameAddr] = {}


def parse_name_addr(text: str) -> NameAddr:
    """Parse name-addr or addr-spec with header parameters (RFC 3261 §20.10).

    Cached by text: From, Contact and Route values recur in every message of a call.
    """
    cached = _NAME_ADDR_CACHE.get(text)
    if cached is not None:
        return cached
    parsed = _parse_name_addr(text)
    if len(_NAME_ADDR_CACHE) >= 8192:
        _NAME_ADDR_CACHE.clear()
    _NAME_ADDR_CACHE[text] = parsed
    return parsed


# `<uri>;params` or `token token <uri>;params`, no quotes or inner spaces: the usual shape.
_SIMPLE_NAME_ADDR = re.compile(
    # Unambiguous on purpose: `(token *)*` would backtrack exponentially on a near miss.
    r"((?:[A-Za-z0-9\-.!%*_+`'~]+(?: +[A-Za-z0-9\-.!%*_+`'~]+)*)? *)"
    r"<([^<>\s\"]+)>((?:;[A-Za-z0-9\-.!%*_+`'~]+(?:=[^;\s\"]+)?)*)"
)


def _parse_name_addr(text: str) -> NameAddr:
    simple = _SIMPLE_NAME_ADDR.fullmatch(text)
    if simple is not None:
        words, uri_text, params = simple.groups()
        return NameAddr(parse_uri(uri_text), words.strip() or None, parse_header_params(params))
    value = text.strip()
    if not value:
        raise SipParseError("empty address")
    display: str | None = None
    if value.startswith('"'):
        display, index = read_quoted(value, 0)
        rest = value[index:].lstrip()
        if not rest.startswith("<"):
            raise SipParseError("quoted display name not followed by <URI>")
        return _bracketed(display, rest)
    lt = value.find("<")
    if lt != -1:
        words = value[:lt].split()
        if not all(is_token(word) for word in words):
            raise SipParseError(f"invalid display name {value[:lt].strip()!r}")
        display = " ".join(words) or None
        return _bracketed(display, value[lt:])
    uri_text, semi, params = value.partition(";")
    if "?" in uri_text or "," in uri_text or " " in uri_text.strip():
        raise SipParseError(f"URI with headers or spaces must be enclosed in <>: {value!r}")
    return NameAddr(
        uri=parse_uri(uri_text.strip()),
        params=parse_header_params(semi + params),
    )


def _bracketed(display: str | None, rest: str) -> NameAddr:
    gt = rest.find(">")
    if gt == -1:
        raise SipParseError("missing '>' in address")
    uri_text = rest[1:gt]
    if uri_text != uri_text.strip():
        raise SipParseError(f"whitespace inside <{uri_text}>")
    return NameAddr(
        uri=parse_uri(uri_text),
        display_name=display,
        params=parse_header_params(rest[gt + 1 :]),
    )


class Via(NamedTuple):
    """One Via entry. ``transport`` is upper-case as on the wire (UDP, TCP, TLS)."""

    transport: str
    host: str
    port: int | None = None
    params: Params = ()

    @property
    def branch(self) -> str | None:
        return param_value(self.params, "branch")

    @property
    def received(self) -> str | None:
        return param_value(self.params, "received")

    @property
    def rport(self) -> int | None:
        value = param_value(self.params, "rport")
        return int(value) if value and is_digits(value) else None

    @property
    def wants_rport(self) -> bool:
        return has_param(self.params, "rport")

    @property
    def sent_by(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def host_differs(self, address: str) -> bool:
        """True when the sent-by host is not the packet's source address."""
        mine = self.host[1:-1] if self.host.startswith("[") else self.host
        return mine != address

    @property
    def is_rfc3261(self) -> bool:
        branch = self.branch
        return branch is not None and branch.startswith(MAGIC_COOKIE)

    def with_param(self, name: str, value: str | None) -> Via:
        return Via(self.transport, self.host, self.port, set_param(self.params, name, value))

    def __str__(self) -> str:
        return f"SIP/2.0/{self.transport} {self.sent_by}{format_header_params(self.params)}"


_SIMPLE_VIA = re.compile(
    r"SIP/2\.0/([A-Za-z]+) ([A-Za-z0-9.\-_]+|\[[0-9A-Fa-f:.]+\])(?::(\d{1,5}))?(;.*)?"
)


def parse_via(text: str) -> Via:
    simple = _SIMPLE_VIA.fullmatch(text)
    if simple is not None:  # the canonical form, without folding or spaces
        transport, host, port_text, params = simple.groups()
        if port_text is None or int(port_text) <= 65535:
            return Via(transport.upper(), host.lower(), int(port_text) if port_text else None,
                       parse_header_params(params or ""))
    match = _VIA_RE.match(text)
    if match is None:
        raise SipParseError(f"malformed Via {text.strip()!r}")
    protocol, version, transport, sent_by, params = match.groups()
    if protocol.upper() != "SIP" or version != "2.0":
        raise SipParseError(f"unsupported Via protocol {protocol}/{version}")
    sent_by = sent_by.replace(" ", "").replace("\t", "")
    if sent_by.startswith("["):
        end = sent_by.find("]")
        host, port_text = sent_by[: end + 1], sent_by[end + 2 :]
    else:
        host, _, port_text = sent_by.partition(":")
    if port_text and (not is_digits(port_text) or int(port_text) > 65535):
        raise SipParseError(f"invalid Via port {port_text!r}")
    return Via(
        transport=transport.upper(),
        host=host.lower(),
        port=int(port_text) if port_text else None,
        params=parse_header_params(params or ""),
    )


class CSeq(NamedTuple):
    seq: int
    method: str

    def __str__(self) -> str:
        return f"{self.seq} {self.method}"


def parse_cseq(text: str) -> CSeq:
    parts = text.split()
    if len(parts) != 2 or not is_digits(parts[0]):
        raise SipParseError(f"malformed CSeq {text.strip()!r}")
    seq = int(parts[0])
    if seq > _MAX_CSEQ:
        raise SipParseError(f"CSeq number {parts[0]} exceeds 2**31-1")
    if not is_token(parts[1]):
        raise SipParseError(f"invalid CSeq method {parts[1]!r}")
    return CSeq(seq, parts[1])


def parse_bounded_int(text: str, name: str, maximum: int) -> int:
    value = text.strip()
    if not is_digits(value) or len(value) > 10 or int(value) > maximum:
        raise SipParseError(f"invalid {name} value {value!r}")
    return int(value)


@dataclass(frozen=True, slots=True)
class Replaces:
    """RFC 3891: which dialog a new INVITE replaces."""

    call_id: str
    to_tag: str
    from_tag: str
    early_only: bool = False

    def __str__(self) -> str:
        early = ";early-only" if self.early_only else ""
        return f"{self.call_id};to-tag={self.to_tag};from-tag={self.from_tag}{early}"


def parse_replaces(text: str) -> Replaces:
    call_id, _, params_text = text.strip().partition(";")
    params = parse_header_params(";" + params_text) if params_text else ()
    to_tag = param_value(params, "to-tag")
    from_tag = param_value(params, "from-tag")
    if not call_id or to_tag is None or from_tag is None:
        raise SipParseError(f"Replaces needs call-id, to-tag and from-tag: {text!r}")
    return Replaces(call_id.strip(), to_tag, from_tag, has_param(params, "early-only"))


def parse_tokens(values: list[str]) -> list[str]:
    """Flatten ``Allow``/``Supported``/``Require`` values into a list of tokens."""
    tokens: list[str] = []
    for value in values:
        for item in split_list(value):
            if not is_token(item):
                raise SipParseError(f"invalid token {item!r}")
            tokens.append(item)
    return tokens


@dataclass(frozen=True, slots=True)
class Challenge:
    """A WWW-/Proxy-Authenticate or Authorization value: scheme and params."""

    scheme: str
    params: dict[str, str]

    def __str__(self) -> str:
        rendered = ", ".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.scheme} {rendered}"


def parse_auth(text: str) -> Challenge:
    """Parse ``Digest realm="r", nonce="n", qop="auth"`` (values unquoted)."""
    scheme, _, rest = text.strip().partition(" ")
    if not is_token(scheme):
        raise SipParseError(f"invalid auth scheme {scheme!r}")
    params: dict[str, str] = {}
    for item in split_list(rest):
        name, sep, value = item.partition("=")
        if not sep:
            raise SipParseError(f"auth parameter without a value: {item!r}")
        value = value.strip()
        if value.startswith('"'):
            value, _ = read_quoted(value, 0)
        params[name.strip().lower()] = value
    return Challenge(scheme, params)


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    state: str
    params: Params = ()

    @property
    def expires(self) -> int | None:
        value = param_value(self.params, "expires")
        return int(value) if value and is_digits(value) else None

    @property
    def reason(self) -> str | None:
        return param_value(self.params, "reason")


def parse_subscription_state(text: str) -> SubscriptionState:
    state, _, rest = text.strip().partition(";")
    if not is_token(state.strip()):
        raise SipParseError(f"invalid Subscription-State {text!r}")
    return SubscriptionState(state.strip().lower(), parse_header_params(";" + rest if rest else ""))
