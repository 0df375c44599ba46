"""SIP requests and responses: framing, parsing and serialization (RFC 3261 §7).

Parsing is two-step on purpose. :func:`parse_message` only frames the message
(start line, unfolded headers, Content-Length body), which is cheap and
tolerant, so that even a request with broken fields can still be answered.
:func:`validate_request` / :func:`validate_response` then check the fields the
core relies on and raise :class:`SipParseError` carrying the status to answer.
Typed header values are parsed on first access and cached per message.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from warmline.sip.errors import MessageTooLarge, SipParseError
from warmline.sip.headers import (
    _CANONICAL_SPECIAL as _CANONICAL,
)
from warmline.sip.headers import (
    COMPACT_FORMS,
    LIST_HEADERS,
    SINGLE_HEADERS,
    CSeq,
    NameAddr,
    Replaces,
    Via,
    canonical_name,
    is_token,
    parse_bounded_int,
    parse_cseq,
    parse_name_addr,
    parse_replaces,
    parse_tokens,
    parse_via,
    split_list,
)
from warmline.sip.uri import SipUri, Uri, is_digits, parse_uri

SIP_VERSION = "SIP/2.0"
DEFAULT_MAX_SIZE = 65_535
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"

REASON_PHRASES = {
    100: "Trying", 180: "Ringing", 181: "Call Is Being Forwarded", 182: "Queued",
    183: "Session Progress", 200: "OK", 202: "Accepted", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Moved Temporarily", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    407: "Proxy Authentication Required", 408: "Request Timeout", 415: "Unsupported Media Type",
    416: "Unsupported URI Scheme", 420: "Bad Extension", 421: "Extension Required",
    422: "Session Interval Too Small", 423: "Interval Too Brief", 480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist", 482: "Loop Detected", 483: "Too Many Hops",
    486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
    489: "Bad Event", 491: "Request Pending", 500: "Server Internal Error",
    501: "Not Implemented", 503: "Service Unavailable", 504: "Server Time-out",
    505: "Version Not Supported", 513: "Message Too Large", 600: "Busy Everywhere",
    603: "Decline", 604: "Does Not Exist Anywhere", 606: "Not Acceptable",
}


class Message:
    """Common part of requests and responses: ordered headers and a body.

    Headers are kept as ``[lower-case name, value]`` pairs in wire order;
    compact names are expanded on parse. Typed accessors cache their result
    until the header is changed.
    """

    __slots__ = ("_cache", "body", "headers")

    def __init__(self, headers: Iterable[tuple[str, str]] = (), body: bytes = b"") -> None:
        self.headers: list[list[str]] = [[_normalize_name(n), v] for n, v in headers]
        self.body = body
        self._cache: dict[str, Any] = {}

    # -- raw access -------------------------------------------------------
    def get(self, name: str) -> str | None:
        """The first value of a header, or None."""
        key = _NORMALIZED.get(name) or _normalize_name(name)
        for header in self.headers:
            if header[0] == key:
                return header[1]
        return None

    def values(self, name: str) -> list[str]:
        """All values of a header; list headers are split on commas."""
        key = _NORMALIZED.get(name) or _normalize_name(name)
        raw = [value for header_name, value in self.headers if header_name == key]
        if key in LIST_HEADERS:
            return [item for value in raw for item in split_list(value)]
        return raw

    def count(self, name: str) -> int:
        key = _normalize_name(name)
        return sum(1 for header_name, _ in self.headers if header_name == key)

    def set(self, name: str, value: object) -> None:
        """Replace every copy of a header with one value (at the first copy's place)."""
        key = self._invalidate(name)
        text = str(value)
        for index, (header_name, _) in enumerate(self.headers):
            if header_name == key:
                self.headers[index] = [key, text]
                self.headers[index + 1 :] = [h for h in self.headers[index + 1 :] if h[0] != key]
                return
        self.headers.append([key, text])

    def replace_first_value(self, name: str, value: str) -> None:
        """Replace the first value of a (possibly comma-listed) header, e.g. the top Via."""
        key = self._invalidate(name)
        for header in self.headers:
            if header[0] == key:
                rest = split_list(header[1])[1:] if key in LIST_HEADERS else []
                header[1] = ", ".join([value, *rest])
                return
        self.headers.append([key, value])

    def add(self, name: str, value: object, *, first: bool = False) -> None:
        key = self._invalidate(name)
        if first:
            self.headers.insert(0, [key, str(value)])
        else:
            self.headers.append([key, str(value)])

    def remove(self, name: str) -> None:
        key = self._invalidate(name)
        self.headers = [h for h in self.headers if h[0] != key]

    def _invalidate(self, name: str) -> str:
        key = _normalize_name(name)
        cache = self._cache
        if cache:
            cache.pop(key, None)
            if key == "via":
                cache.pop("top-via", None)
        return key

    # -- typed access (parsed once, cached until the header changes) -------
    @property
    def call_id(self) -> str:
        value = self.get("call-id")
        if value is None:
            raise SipParseError("missing Call-ID")
        return value

    @property
    def cseq(self) -> CSeq:
        value: CSeq | None = self._cache.get("cseq")
        if value is None:
            value = self._cache["cseq"] = parse_cseq(self._required("cseq"))
        return value

    @property
    def from_(self) -> NameAddr:
        value: NameAddr | None = self._cache.get("from")
        if value is None:
            value = self._cache["from"] = parse_name_addr(self._required("from"))
        return value

    @property
    def to(self) -> NameAddr:
        value: NameAddr | None = self._cache.get("to")
        if value is None:
            value = self._cache["to"] = parse_name_addr(self._required("to"))
        return value

    @property
    def vias(self) -> list[Via]:
        value: list[Via] | None = self._cache.get("via")
        if value is None:
            value = self._cache["via"] = [parse_via(v) for v in self.values("via")]
        return value

    @property
    def top_via(self) -> Via:
        value: Via | None = self._cache.get("top-via")
        if value is None and "via" in self._cache:
            vias = self._cache["via"]
            value = vias[0] if vias else None
        if value is None:
            first = self.get("via")
            if first is None:
                raise SipParseError("missing Via")
            top = first.split(",", 1)[0] if "," in first else first
            if '"' in top or "<" in top:  # a comma inside a quoted param: split properly
                top = split_list(first)[0]
            value = self._cache["top-via"] = parse_via(top)
        return value

    @property
    def contacts(self) -> list[NameAddr]:
        value: list[NameAddr] | None = self._cache.get("contact")
        if value is None:
            value = self._cache["contact"] = [
                parse_name_addr(v) for v in self.values("contact") if v != "*"
            ]
        return value

    @property
    def contact(self) -> NameAddr | None:
        contacts = self.contacts
        return contacts[0] if contacts else None

    @property
    def record_route(self) -> list[NameAddr]:
        return [parse_name_addr(v) for v in self.values("record-route")]

    @property
    def route(self) -> list[NameAddr]:
        return [parse_name_addr(v) for v in self.values("route")]

    @property
    def refer_to(self) -> NameAddr | None:
        value = self.get("refer-to")
        return None if value is None else parse_name_addr(value)

    @property
    def referred_by(self) -> NameAddr | None:
        value = self.get("referred-by")
        return None if value is None else parse_name_addr(value)

    @property
    def replaces(self) -> Replaces | None:
        value = self.get("replaces")
        return None if value is None else parse_replaces(value)

    @property
    def allow(self) -> list[str]:
        return parse_tokens(self.values("allow"))

    @property
    def supported(self) -> list[str]:
        return parse_tokens(self.values("supported"))

    @property
    def require(self) -> list[str]:
        return parse_tokens(self.values("require"))

    @property
    def content_type(self) -> str | None:
        value = self.get("content-type")
        return None if value is None else value.split(";")[0].strip().lower()

    @property
    def max_forwards(self) -> int | None:
        value = self.get("max-forwards")
        return None if value is None else parse_bounded_int(value, "Max-Forwards", 255)

    @property
    def expires(self) -> int | None:
        value = self.get("expires")
        return None if value is None else parse_bounded_int(value, "Expires", 2**32 - 1)

    def _required(self, name: str) -> str:
        value = self.get(name)
        if value is None:
            raise SipParseError(f"missing {canonical_name(name)}")
        return value

    # -- output -----------------------------------------------------------
    def start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """Serialize with a Content-Length that always matches the body."""
        lines = [self.start_line()]
        names = _CANONICAL
        for name, value in self.headers:
            if name != "content-length":
                lines.append(f"{names.get(name) or canonical_name(name)}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode(_ENCODING, _ERRORS) + self.body

    def __bytes__(self) -> bytes:
        return self.to_bytes()


_IDENTITY_HEADERS = ("via", "from", "to", "call-id", "cseq")


class Request(Message):
    __slots__ = ("method", "uri", "version")

    def __init__(
        self,
        method: str,
        uri: Uri,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
        version: str = SIP_VERSION,
    ) -> None:
        super().__init__(headers, body)
        self.method = method
        self.uri = uri
        self.version = version

    def start_line(self) -> str:
        return f"{self.method} {self.uri} {SIP_VERSION}"

    def skeleton(self) -> Request:
        """A copy with only what identifies the request: its top Via, From, To, Call-ID and
        CSeq, and no body.

        A server transaction that has answered keeps this for the 32 s it absorbs
        retransmissions, instead of every parsed header and the SDP: that was half of
        what a call held in memory after it ended.
        """
        kept: list[tuple[str, str]] = []
        wanted = set(_IDENTITY_HEADERS)
        for name, value in self.headers:
            if name in wanted:
                wanted.discard(name)
                kept.append((name, value))
        return Request(self.method, self.uri, kept, version=self.version)

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.uri}>"


class Response(Message):
    __slots__ = ("reason", "status")

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        super().__init__(headers, body)
        self.status = status
        self.reason = REASON_PHRASES.get(status, "") if reason is None else reason

    @property
    def is_provisional(self) -> bool:
        return self.status < 200

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300

    def start_line(self) -> str:
        return f"{SIP_VERSION} {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason}>"


_NORMALIZED: dict[str, str] = {}


def _normalize_name(name: str) -> str:
    """Lower-case, compact forms expanded; memoized since the same few names recur."""
    known = _NORMALIZED.get(name)
    if known is None:
        lowered = name.lower()
        known = COMPACT_FORMS.get(lowered, lowered)
        if len(_NORMALIZED) < 4096 and is_token(name):  # the parser trusts cached names
            _NORMALIZED[name] = known
    return known


def parse_message(data: bytes, *, max_size: int = DEFAULT_MAX_SIZE) -> Request | Response:
    """Frame one datagram (or one already-framed stream message).

    Bytes after the body that Content-Length announces are ignored, as RFC
    3261 §18.3 asks for datagrams. Raises :class:`SipParseError`.
    """
    if len(data) > max_size:
        raise MessageTooLarge(len(data), max_size)
    data = data.lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    skip = 4
    if end == -1:
        end = data.find(b"\n\n")
        skip = 2
        if end == -1:
            raise SipParseError("no blank line after the headers")
    head = data[:end].decode(_ENCODING, _ERRORS)
    lines = head.replace("\r\n", "\n").split("\n")
    message = _parse_start_line(lines[0])
    _parse_header_lines(message, lines)
    message.body = _frame_body(message, data[end + skip :])
    return message


def _parse_start_line(line: str) -> Request | Response:
    if line[:4].upper() == "SIP/":
        version, _, rest = line.partition(" ")
        code, _, reason = rest.partition(" ")
        if version.upper() != SIP_VERSION:
            raise SipParseError(f"unsupported version {version!r}", status=505)
        if len(code) != 3 or not is_digits(code) or not 100 <= int(code) <= 699:
            raise SipParseError(f"invalid status code {code!r}")
        return Response(int(code), reason)
    parts = line.split(" ")
    if len(parts) != 3 or not all(parts):
        raise SipParseError("malformed Request-Line (elements must be separated by one SP)")
    method, uri_text, version = parts
    if not is_token(method):
        raise SipParseError(f"invalid method {method!r}")
    if uri_text.startswith("<"):
        raise SipParseError("Request-URI must not be enclosed in <>")
    uri = parse_uri(uri_text)
    return Request(method, uri, version=version)


def _parse_header_lines(message: Message, lines: list[str]) -> None:
    headers = message.headers
    normalized = _NORMALIZED
    for line in lines[1:]:
        if not line:
            continue
        if line[0] in " \t":
            if not headers:
                raise SipParseError("continuation line before any header")
            headers[-1][1] = f"{headers[-1][1]} {line.strip()}".strip()
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise SipParseError(f"header line without ':': {line[:40]!r}")
        key = normalized.get(name)  # names seen before are known-good tokens
        if key is None:
            name = name.rstrip(" \t")
            if not is_token(name):
                raise SipParseError(f"invalid header name {name!r}")
            key = _normalize_name(name)
        headers.append([key, value.strip()])


def _frame_body(message: Message, rest: bytes) -> bytes:
    lengths = [v for n, v in message.headers if n == "content-length"]
    if not lengths:
        return rest
    if len(lengths) > 1:
        raise SipParseError("multiple Content-Length headers")
    text = lengths[0].strip()
    if not is_digits(text):
        raise SipParseError(f"invalid Content-Length {text!r}")
    length = int(text)
    if length > len(rest):
        raise SipParseError(f"Content-Length {length} exceeds the {len(rest)} bytes received")
    return rest[:length]


def parse_sipfrag_status(body: bytes) -> int:
    """The status code of a message/sipfrag body (RFC 3420), e.g. ``SIP/2.0 200 OK``."""
    first = body.split(b"\n", 1)[0].strip().decode("utf-8", "replace")
    parts = first.split(" ", 2)
    if len(parts) < 2 or parts[0].upper() != "SIP/2.0" or not is_digits(parts[1]):
        raise SipParseError(f"NOTIFY body is not a sipfrag status line: {first[:60]!r}")
    status = int(parts[1])
    if not 100 <= status <= 699:
        raise SipParseError(f"sipfrag status {status} out of range")
    return status


def validate_request(request: Request) -> None:
    """Check the fields the core relies on; raise SipParseError with the status to answer."""
    if request.version.upper() != SIP_VERSION:
        raise SipParseError(f"SIP version {request.version} not supported", status=505)
    if isinstance(request.uri, SipUri) and request.uri.headers:
        raise SipParseError("Request-URI must not contain headers")
    _validate_common(request)
    if request.cseq.method != request.method:
        raise SipParseError(
            f"CSeq method {request.cseq.method} does not match request method {request.method}"
        )
    request.max_forwards  # noqa: B018 - parse to validate
    if request.method in _CONTACT_MATTERS:
        request.expires  # noqa: B018
        request.contacts  # noqa: B018


# Methods whose Contact sets or refreshes a remote target (or a registration):
# only there does a malformed Contact change what the core does.
_CONTACT_MATTERS = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER", "REGISTER"})


def validate_response(response: Response) -> None:
    _validate_common(response)
    if response.cseq.method == "INVITE" and 100 < response.status < 300:
        if response.status >= 200 and response.to.tag is None:
            raise SipParseError("a 2xx that creates a dialog needs a To tag")
        if response.status >= 200 or response.get("contact") is not None:
            check_dialog_fields(response)


def check_dialog_fields(message: Message) -> None:
    """Contact and Record-Route build a dialog's route: they must be SIP URIs."""
    contact = message.contact
    if contact is None:
        raise SipParseError("Missing Contact")
    if not isinstance(contact.uri, SipUri):
        raise SipParseError("Contact must be a sip: or sips: URI")
    for route in message.record_route:
        if not isinstance(route.uri, SipUri):
            raise SipParseError("Record-Route must hold sip: or sips: URIs")


_REQUIRED = ("via", "from", "to", "call-id", "cseq")


def _validate_common(message: Message) -> None:
    seen: set[str] = set()
    for name, _ in message.headers:
        if name in SINGLE_HEADERS and name in seen:
            raise SipParseError(f"multiple {canonical_name(name)} headers")
        seen.add(name)
    for name in _REQUIRED:
        if name not in seen:
            raise SipParseError(f"missing {canonical_name(name)} header")
    message.top_via  # noqa: B018 - a UA only reads the top Via; the rest are copied verbatim
    message.from_  # noqa: B018
    message.to  # noqa: B018
    message.cseq  # noqa: B018


class StreamFramer:
    """Cuts a TCP/TLS byte stream into SIP messages (RFC 3261 §18.3).

    Content-Length is mandatory on streams. A message larger than
    ``max_size`` raises :class:`MessageTooLarge`: the caller should answer 513
    if it can and close the connection, since framing is lost.
    """

    def __init__(self, max_size: int = DEFAULT_MAX_SIZE) -> None:
        self.max_size = max_size
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes of a message not complete yet (0 between messages)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        messages: list[bytes] = []
        while True:
            message = self._next()
            if message is None:
                return messages
            messages.append(message)

    def _next(self) -> bytes | None:
        buffer = self._buffer
        while buffer[:2] == b"\r\n":  # RFC 5626 keep-alives and stray CRLFs
            del buffer[:2]
        end = buffer.find(b"\r\n\r\n")
        if end == -1:
            if len(buffer) > self.max_size:
                raise MessageTooLarge(len(buffer), self.max_size)
            return None
        length = _stream_content_length(bytes(buffer[:end]))
        total = end + 4 + length
        if total > self.max_size:
            raise MessageTooLarge(total, self.max_size)
        if len(buffer) < total:
            return None
        message = bytes(buffer[:total])
        del buffer[:total]
        return message


def _stream_content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() in (b"content-length", b"l"):
            text = value.strip()
            if not text.isdigit():
                raise SipParseError(f"invalid Content-Length {text!r}")
            return int(text)
    raise SipParseError("Content-Length is required on stream transports")
