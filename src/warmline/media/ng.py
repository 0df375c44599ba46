"""rtpengine's ng control protocol: bencoded dictionaries over UDP, with retransmission.

Each request is ``COOKIE SP bencode(dict)``; the reply carries the same cookie.
rtpengine caches its replies by cookie, so a request that got no reply is sent
again unchanged (same cookie) and never runs twice. The bookkeeping (cookies,
when to send again, when to give up) is :class:`NgSession`, pure and driven by
the caller's clock, so its orderings are unit-tested with a fake clock;
:class:`NgClient` is the asyncio shell around it: one UDP socket, commands
awaited, a bounded number in flight.

Failures are exceptions, all :class:`RtpengineError` (an ``OSError``, what the
call logic already treats as "no media now"): :class:`NgTimeout` when
rtpengine does not answer, :class:`NgCommandError` when it answers
``result=error`` (with its ``error-reason``), :class:`NgProtocolError` for a
reply that is not bencode.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field

BValue = int | bytes | str | list["BValue"] | dict[str, "BValue"]

MAX_DATAGRAM = 65_535
_MAX_DEPTH = 32


class RtpengineError(OSError):
    """rtpengine could not do what was asked (the call gets a 503, not a hang)."""


class NgTimeout(RtpengineError):
    """No reply after every retransmission."""


class NgCommandError(RtpengineError):
    """rtpengine answered ``result=error``; the message is its ``error-reason``."""


class NgProtocolError(RtpengineError):
    """A datagram that is not a well-formed ng reply."""


# ------------------------------------------------------------------ bencode
def bencode(value: BValue) -> bytes:
    """Bencode ints, strings (UTF-8), bytes, lists and dicts (keys sorted, as the format asks)."""
    if isinstance(value, bool):
        raise TypeError("cannot bencode a bool: say 1/0 or a flag string")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(item) for item in value) + b"e"
    if isinstance(value, dict):
        items = sorted((key.encode(), item) for key, item in value.items())
        return b"d" + b"".join(bencode(key) + bencode(item) for key, item in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> BValue:
    """The one value ``data`` holds (dict keys as str, strings as bytes); NgProtocolError
    for anything malformed, truncated, too deep or followed by junk."""
    try:
        value, end = _decode(data, 0, 0)
    except (ValueError, IndexError, UnicodeDecodeError) as error:
        raise NgProtocolError(f"ng: bad bencode: {error}") from None
    if end != len(data):
        raise NgProtocolError(f"ng: {len(data) - end} bytes after the value")
    return value


def _decode(data: bytes, index: int, depth: int) -> tuple[BValue, int]:
    if depth > _MAX_DEPTH:
        raise ValueError("nested too deep")
    kind = data[index:index + 1]
    if kind == b"i":
        end = data.index(b"e", index)
        return int(data[index + 1:end]), end + 1
    if kind == b"l":
        items: list[BValue] = []
        index += 1
        while data[index:index + 1] != b"e":
            if index >= len(data):
                raise ValueError("unterminated list")
            item, index = _decode(data, index, depth + 1)
            items.append(item)
        return items, index + 1
    if kind == b"d":
        mapping: dict[str, BValue] = {}
        index += 1
        while data[index:index + 1] != b"e":
            if index >= len(data):
                raise ValueError("unterminated dict")
            key, index = _decode(data, index, depth + 1)
            if not isinstance(key, bytes):
                raise ValueError("dict key is not a string")
            mapping[key.decode()], index = _decode(data, index, depth + 1)
        return mapping, index + 1
    if not kind.isdigit():
        raise ValueError(f"unexpected {kind!r} at {index}")
    colon = data.index(b":", index)
    length = int(data[index:colon])
    if colon + 1 + length > len(data):
        raise ValueError("string runs past the end")
    return data[colon + 1:colon + 1 + length], colon + 1 + length


# ------------------------------------------------------------------ sans-IO session
@dataclass
class _Pending:
    datagram: bytes
    command: str
    deadline: float  # give up after this
    resend_at: float
    interval: float


@dataclass
class NgSession:
    """Cookies, retransmission and timeouts for ng requests; no I/O, no clock of its own.

    A request is sent at once, again after ``first_retransmit`` seconds, the
    interval doubling, until ``timeout`` seconds have passed; then it fails.
    ``max_pending`` bounds requests in flight (a dead rtpengine must not pile
    them up): past it :meth:`request` raises at once.
    """

    timeout: float = 1.0
    first_retransmit: float = 0.1
    max_pending: int = 1024
    _pending: dict[bytes, _Pending] = field(default_factory=dict)
    _prefix: str = field(default_factory=lambda: secrets.token_hex(4))
    _counter: int = 0

    def request(self, command: str, fields: Mapping[str, BValue], now: float,
                ) -> tuple[bytes, bytes]:
        """(cookie, datagram to send now) for ``command`` with ``fields``."""
        if len(self._pending) >= self.max_pending:
            raise RtpengineError(f"ng: {self.max_pending} requests already waiting for rtpengine")
        self._counter += 1
        cookie = f"{self._prefix}{self._counter:x}".encode()
        body = bencode({**fields, "command": command})
        datagram = cookie + b" " + body
        if len(datagram) > MAX_DATAGRAM:
            raise RtpengineError(f"ng: {command} request is {len(datagram)} bytes")
        self._pending[cookie] = _Pending(datagram, command, now + self.timeout,
                                         now + self.first_retransmit, self.first_retransmit)
        return cookie, datagram

    def receive(self, datagram: bytes) -> tuple[bytes, dict[str, BValue]] | None:
        """(cookie, reply dict) for a reply to a pending request; None for a late, duplicate
        or unknown one. NgProtocolError for a datagram that is not a reply at all."""
        cookie, space, body = datagram.partition(b" ")
        if not space:
            raise NgProtocolError("ng: reply without a cookie")
        if self._pending.pop(cookie, None) is None:
            return None
        reply = bdecode(body)
        if not isinstance(reply, dict):
            raise NgProtocolError("ng: reply is not a dictionary")
        return cookie, reply

    def due(self, now: float) -> tuple[list[bytes], list[tuple[bytes, str]]]:
        """(datagrams to send again now, (cookie, command) of requests that timed out)."""
        resend: list[bytes] = []
        expired: list[tuple[bytes, str]] = []
        for cookie, pending in list(self._pending.items()):
            if now >= pending.deadline:
                del self._pending[cookie]
                expired.append((cookie, pending.command))
            elif now >= pending.resend_at:
                pending.interval *= 2
                pending.resend_at = now + pending.interval
                resend.append(pending.datagram)
        return resend, expired

    def next_wakeup(self) -> float | None:
        """The earliest time :meth:`due` has something to do; None when nothing waits."""
        times = [min(p.resend_at, p.deadline) for p in self._pending.values()]
        return min(times) if times else None

    def forget(self, cookie: bytes) -> None:
        self._pending.pop(cookie, None)

    @property
    def pending(self) -> int:
        return len(self._pending)


def check_reply(command: str, reply: dict[str, BValue]) -> dict[str, BValue]:
    """``reply`` if rtpengine says ok (or pong); NgCommandError with its reason otherwise."""
    result = reply.get("result")
    if result in (b"ok", b"pong"):
        return reply
    reason = reply.get("error-reason", result)
    text = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
    raise NgCommandError(f"rtpengine refused {command!r}: {text}")


# ------------------------------------------------------------------ asyncio shell
class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self, client: NgClient) -> None:
        self.client = client

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.client.on_datagram(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable: rtpengine is not there; the retries and timeout say so
        self.client.last_error = str(exc)


class NgClient:
    """Async ng commands to rtpengine at ``(host, port)``: ``await client.command(...)``."""

    def __init__(self, host: str, port: int, *, timeout: float = 1.0,
                 first_retransmit: float = 0.1, max_pending: int = 1024) -> None:
        self.address = (host, port)
        self.session = NgSession(timeout, first_retransmit, max_pending)
        self._transport: asyncio.DatagramTransport | None = None
        self._waiters: dict[bytes, asyncio.Future[dict[str, BValue]]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self.last_error: str | None = None
        self.bad_replies = 0

    @property
    def label(self) -> str:
        host, port = self.address
        return f"udp:[{host}]:{port}" if ":" in host else f"udp:{host}:{port}"

    async def command(self, command: str, **fields: BValue) -> dict[str, BValue]:
        """Send ``command`` and wait for its reply; RtpengineError subclasses on failure."""
        loop = asyncio.get_running_loop()
        if self._transport is None:
            self._transport, _ = await loop.create_datagram_endpoint(
                lambda: _Datagrams(self), remote_addr=self.address)
        cookie, datagram = self.session.request(command, fields, loop.time())
        waiter: asyncio.Future[dict[str, BValue]] = loop.create_future()
        self._waiters[cookie] = waiter
        self._transport.sendto(datagram)
        self._arm(loop)
        try:
            reply = await waiter
        finally:
            self._waiters.pop(cookie, None)
            self.session.forget(cookie)
        return check_reply(command, reply)

    def on_datagram(self, data: bytes) -> None:
        try:
            got = self.session.receive(data)
        except NgProtocolError:
            self.bad_replies += 1
            return
        if got is None:
            return
        cookie, reply = got
        waiter = self._waiters.get(cookie)
        if waiter is not None and not waiter.done():
            waiter.set_result(reply)

    def _arm(self, loop: asyncio.AbstractEventLoop) -> None:
        wakeup = self.session.next_wakeup()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if wakeup is not None:
            self._timer = loop.call_at(wakeup, self._tick, loop)

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        self._timer = None
        resend, expired = self.session.due(loop.time())
        for datagram in resend:
            if self._transport is not None:
                self._transport.sendto(datagram)
        for cookie, command in expired:
            waiter = self._waiters.get(cookie)
            if waiter is not None and not waiter.done():
                extra = f" ({self.last_error})" if self.last_error else ""
                waiter.set_exception(NgTimeout(
                    f"rtpengine at {self.label} did not answer {command!r} in "
                    f"{self.session.timeout:g} s{extra}"))
        self._arm(loop)

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for waiter in self._waiters.values():
            if not waiter.done():
                waiter.set_exception(RtpengineError("ng client closed"))
        self._waiters.clear()
        if self._transport is not None:
            self._transport.close()
            self._transport = None
