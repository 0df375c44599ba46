"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966).

URIs are immutable values: parse once, read typed fields, derive changed copies
with :meth:`SipUri.replace`. Parameter names and the scheme are compared
case-insensitively (``transport=UDP`` is ``transport=udp``), URI headers are
kept decoded and re-escaped on output so that
``<sip:b@h?Replaces=call%40h%3Bto-tag%3D1>`` round-trips byte for byte.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote

from warmline.sip.errors import SipParseError

# RFC 3261 hnv-unreserved plus unreserved: the characters a header value may
# carry unescaped inside a URI; everything else is %-escaped on output.
_HEADER_SAFE = "[]/?:+$-_.!~*'()"
_HOST_RE = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.\-_]*)$")
_HOST_AHEAD_RE = re.compile(r"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9][A-Za-z0-9.\-_]*)(?:$|[;?:])")
_SCHEME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+\-.]*$")
_FORBIDDEN_IN_URI = re.compile(r'[ \t\r\n<>"]')
# URIs are immutable, and the same ones recur in every message of a call:
# parsing each distinct text once is the single largest saving on the hot path.
_CACHE: dict[str, SipUri | TelUri | AbsoluteUri] = {}
_CACHE_LIMIT = 8192

Params = tuple[tuple[str, str | None], ...]


def is_digits(text: str) -> bool:
    """ASCII digits only: str.isdigit() also accepts superscript and full-width digits,
    which int() rejects or silently reads, and SIP's DIGIT is %x30-39."""
    return text.isascii() and text.isdigit()


def is_ip_address(host: str) -> bool:
    """An IPv4 or IPv6 literal (no brackets): no DNS needed to reach it.

    Asked for every message sent, of the few hosts a node talks to: the answer is
    remembered (ipaddress takes microseconds), in a table cleared when it fills, so
    a flood of made-up hosts costs memory no more than _ADDRESS_LIMIT short entries."""
    known = _ADDRESS_KINDS.get(host)
    if known is not None:
        return known
    try:
        ipaddress.ip_address(host)
        literal = True
    except ValueError:
        literal = False
    if len(host) > _ADDRESS_LONGEST:
        return literal  # no address is this long: not worth remembering
    if len(_ADDRESS_KINDS) >= _ADDRESS_LIMIT:
        _ADDRESS_KINDS.clear()
    _ADDRESS_KINDS[host] = literal
    return literal


_ADDRESS_KINDS: dict[str, bool] = {}
_ADDRESS_LIMIT = 1024
_ADDRESS_LONGEST = 64  # an IPv6 literal with a zone index fits


def param_value(params: Params, name: str) -> str | None:
    """The value of parameter ``name`` (already lower-case), or None."""
    for key, value in params:
        if key == name:
            return value
    return None


def _parse_params(text: str) -> Params:
    """Parse ``;a=b;c`` (leading ';' already stripped) into ordered pairs."""
    if not text:
        return ()
    pairs: list[tuple[str, str | None]] = []
    for item in text.split(";"):
        if not item:
            raise SipParseError("empty URI parameter")
        name, sep, value = item.partition("=")
        if not name:
            raise SipParseError(f"URI parameter without a name: {item!r}")
        pairs.append((name.lower(), value if sep else None))
    return tuple(pairs)


def _format_params(params: Params) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params)


def _parse_uri_headers(text: str) -> tuple[tuple[str, str], ...]:
    headers: list[tuple[str, str]] = []
    for item in text.split("&"):
        if not item:
            continue
        name, _, value = item.partition("=")
        headers.append((unquote(name), unquote(value)))
    return tuple(headers)


def _format_uri_headers(headers: tuple[tuple[str, str], ...]) -> str:
    if not headers:
        return ""
    return "?" + "&".join(
        f"{escape(n, _HEADER_SAFE)}={escape(v, _HEADER_SAFE)}" for n, v in headers
    )


def escape(text: str, safe: str = "") -> str:
    """``text`` %-escaped but for RFC 3986 unreserved characters and ``safe``.

    What urllib's quote() gives, without its cost: ASCII text goes through one
    ``str.translate``, where quote() calls a Python function for every byte once one
    needs escaping (12 us for the hex User-to-User value that every transfer's
    Refer-To carries, 2.7 us this way)."""
    if not text.isascii():
        return quote(text, safe=safe)
    table = _ESCAPES.get(safe)
    if table is None:
        kept = _UNRESERVED + safe
        table = {code: f"%{code:02X}" for code in range(128) if chr(code) not in kept}
        if len(_ESCAPES) < 64:  # callers pass constants: a handful of tables in all
            _ESCAPES[safe] = table
    return text.translate(table)


_UNRESERVED = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"
_ESCAPES: dict[str, dict[int, str]] = {}  # by ``safe``: each ASCII code that is escaped


@dataclass(frozen=True, slots=True)
class SipUri:
    """A ``sip:`` or ``sips:`` URI.

    ``user`` keeps its escaped form (as on the wire); ``user_decoded`` undoes
    the %-escapes. ``host`` keeps IPv6 brackets so that it can be written back
    unchanged and used as a Via sent-by.
    """

    host: str
    user: str | None = None
    password: str | None = None
    port: int | None = None
    params: Params = ()
    headers: tuple[tuple[str, str], ...] = ()
    scheme: str = "sip"

    @property
    def secure(self) -> bool:
        return self.scheme == "sips"

    @property
    def user_decoded(self) -> str | None:
        return None if self.user is None else unquote(self.user)

    @property
    def transport(self) -> str | None:
        """The ``transport`` parameter, lower-cased, or None."""
        value = self.param("transport")
        return value.lower() if value else None

    @property
    def lr(self) -> bool:
        return self.has_param("lr")

    @property
    def bare_host(self) -> str:
        """The host without IPv6 brackets, as socket APIs want it."""
        return self.host[1:-1] if self.host.startswith("[") else self.host

    def param(self, name: str) -> str | None:
        return param_value(self.params, name.lower())

    def has_param(self, name: str) -> bool:
        name = name.lower()
        return any(key == name for key, _ in self.params)

    def header(self, name: str) -> str | None:
        """A URI header (``?Replaces=...``), decoded, matched case-insensitively."""
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None

    def with_param(self, name: str, value: str | None = None) -> SipUri:
        name = name.lower()
        kept = tuple((k, v) for k, v in self.params if k != name)
        return self.replace(params=(*kept, (name, value)))

    def without_param(self, name: str) -> SipUri:
        name = name.lower()
        return self.replace(params=tuple((k, v) for k, v in self.params if k != name))

    def replace(self, **changes: Any) -> SipUri:
        return dataclasses.replace(self, **changes)

    def host_port(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        userinfo = ""
        if self.user is not None:
            userinfo = self.user if self.password is None else f"{self.user}:{self.password}"
            userinfo += "@"
        return (
            f"{self.scheme}:{userinfo}{self.host_port()}"
            f"{_format_params(self.params)}{_format_uri_headers(self.headers)}"
        )


@dataclass(frozen=True, slots=True)
class TelUri:
    """A ``tel:`` URI (RFC 3966); ``number`` is global (``+E.164``) or local."""

    number: str
    params: Params = ()

    scheme: str = field(default="tel", init=False)

    @property
    def is_global(self) -> bool:
        return self.number.startswith("+")

    def param(self, name: str) -> str | None:
        return param_value(self.params, name.lower())

    def __str__(self) -> str:
        return f"tel:{self.number}{_format_params(self.params)}"


@dataclass(frozen=True, slots=True)
class AbsoluteUri:
    """Any other absolute URI (``http:``, ``urn:``, ``isbn:`` ...), kept opaque."""

    scheme: str
    opaque: str

    def __str__(self) -> str:
        return f"{self.scheme}:{self.opaque}"


Uri = SipUri | TelUri | AbsoluteUri


def parse_uri(text: str) -> Uri:
    """Parse any URI that may appear in a SIP message (cached: the values are immutable)."""
    cached = _CACHE.get(text)
    if cached is not None:
        return cached
    uri = _parse_uri(text)
    if len(_CACHE) >= _CACHE_LIMIT:
        _CACHE.clear()
    _CACHE[text] = uri
    return uri


def _parse_uri(text: str) -> Uri:
    if not text or _FORBIDDEN_IN_URI.search(text):
        raise SipParseError(f"invalid URI {text!r}")
    scheme, sep, rest = text.partition(":")
    if not sep or not _SCHEME_RE.match(scheme):
        raise SipParseError(f"URI without a scheme: {text!r}")
    lowered = scheme.lower()
    if lowered in ("sip", "sips"):
        return _parse_sip_uri(lowered, rest, text)
    if lowered == "tel":
        number, _, params = rest.partition(";")
        if not number:
            raise SipParseError(f"tel URI without a number: {text!r}")
        return TelUri(number=number, params=_parse_params(params))
    if not rest:
        raise SipParseError(f"empty URI body: {text!r}")
    return AbsoluteUri(scheme=lowered, opaque=rest)


def parse_sip_uri(text: str) -> SipUri:
    """Parse a URI that must be sip: or sips:."""
    uri = parse_uri(text)
    if not isinstance(uri, SipUri):
        raise SipParseError(f"not a SIP URI: {text!r}", status=416)
    return uri


def _parse_sip_uri(scheme: str, rest: str, text: str) -> SipUri:
    user = password = None
    at = _userinfo_end(rest)
    if at != -1:
        userinfo, rest = rest[:at], rest[at + 1 :]
        if not userinfo:
            raise SipParseError(f"empty user part in {text!r}")
        user, colon, pw = userinfo.partition(":")
        password = pw if colon else None
    question = rest.find("?")
    headers: tuple[tuple[str, str], ...] = ()
    if question != -1:
        headers = _parse_uri_headers(rest[question + 1 :])
        rest = rest[:question]
    hostport, _, param_text = rest.partition(";")
    host, port = _split_host_port(hostport, text)
    return SipUri(
        host=host,
        user=user,
        password=password,
        port=port,
        params=_parse_params(param_text),
        headers=headers,
        scheme=scheme,
    )


def _userinfo_end(rest: str) -> int:
    """Index of the '@' that ends the userinfo, or -1.

    The user part may itself contain '?', ';' and ':' (RFC 4475 §3.1.1.2), so
    the separator is the first '@' followed by something that reads as a host.
    """
    at = rest.find("@")
    while at != -1:
        if _HOST_AHEAD_RE.match(rest, at + 1):
            return at
        at = rest.find("@", at + 1)
    return -1


def _split_host_port(hostport: str, text: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end == -1:
            raise SipParseError(f"unterminated IPv6 reference in {text!r}")
        host, port_text = hostport[: end + 1], hostport[end + 1 :]
        if port_text and not port_text.startswith(":"):
            raise SipParseError(f"junk after IPv6 host in {text!r}")
        port_text = port_text[1:]
    else:
        host, _, port_text = hostport.partition(":")
    if not _HOST_RE.match(host):
        raise SipParseError(f"invalid host {host!r} in {text!r}")
    return host.lower(), _parse_port(port_text, text)


def _parse_port(port_text: str, text: str) -> int | None:
    if not port_text:
        return None
    if not is_digits(port_text) or len(port_text) > 5 or int(port_text) > 65535:
        raise SipParseError(f"invalid port {port_text!r} in {text!r}")
    return int(port_text)
