"""Status callbacks: what happens to calls and handoffs, pushed to an integrator as it happens.

A CRM, a wallboard or the bot itself should not poll ``GET /calls`` to learn
that a call was answered, a transfer connected or failed, or the caller came
back to the AI. Each such event is POSTed to ``[events] url`` as JSON, signed
the Standard Webhooks way (``webhook-id``, ``webhook-timestamp``,
``webhook-signature``; the maintained ``standardwebhooks`` package does the
signing), so a receiver verifies it with any Standard Webhooks library.

Delivery is in order, one at a time, retried with exponential back-off on a
network error, a timeout or a 5xx/429 (a 4xx other than 429 is the receiver
refusing: not retried). The queue is bounded: a receiver down for long costs
at most ``max_queued`` events of memory, the oldest dropped first and
counted. Each event keeps its ``webhook-id`` across retries, so a receiver
can drop duplicates. Nothing is sent unless a URL is configured.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

log = logging.getLogger("warmline.events")

# what is pushed by default: the steps an integrator acts on (record kinds)
DEFAULT_KINDS = frozenset({
    "call.started", "call.ended", "call.hangup_requested",
    "handoff.requested", "handoff.ringing", "handoff.answered", "handoff.connected",
    "handoff.failed", "handoff.completed", "handoff.returned_to_ai",
    "handoff.attempt_failed", "handoff.fallback",
    "handoff.voicemail_saved", "handoff.callback_scheduled",
    "call.outbound_ringing", "call.answered", "call.no_answer", "call.busy", "call.failed",
    "callback.dialled", "callback.answered", "callback.connected", "callback.retry",
    "callback.failed",
})
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})


@dataclass(frozen=True)
class StatusCallbackSettings:
    """``[events]``: where status callbacks go and how they are signed and retried."""

    url: str
    secret: str = field(repr=False)
    kinds: frozenset[str] = DEFAULT_KINDS
    attempts: int = 6

    def build(self) -> StatusCallbacks:
        return StatusCallbacks(self.url, self.secret, self.kinds, attempts=self.attempts)

    def signer_check(self) -> None:
        """Raise the signing library's error now if the secret cannot sign."""
        from standardwebhooks.webhooks import Webhook

        Webhook(_standard_secret(self.secret))


@dataclass(frozen=True)
class CallUrlSettings:
    """``[events] call_url_hosts`` with the secret: per-call status URLs (CallStatusUrls)."""

    secret: str = field(repr=False)
    hosts: tuple[str, ...]
    kinds: frozenset[str] = DEFAULT_KINDS
    attempts: int = 6

    def build(self) -> CallStatusUrls:
        return CallStatusUrls(self.secret, self.hosts, self.kinds, attempts=self.attempts)


@dataclass(frozen=True)
class StatusEvent:
    """One event as sent: its id stays the same across retries."""

    kind: str
    call_id: str
    at: float
    data: dict[str, Any]
    handoff_id: str | None = None
    id: str = field(default_factory=lambda: f"msg_{uuid.uuid4().hex}")

    def body(self) -> str:
        return json.dumps({"type": self.kind, "timestamp": _iso(self.at),
                           "data": {"call_id": self.call_id, "handoff_id": self.handoff_id,
                                    **self.data}}, separators=(",", ":"), default=str)


@dataclass
class DeliveryCounts:
    delivered: int = 0
    retried: int = 0
    refused: int = 0  # the receiver answered 4xx: dropped
    given_up: int = 0  # out of attempts
    dropped: int = 0  # the queue was full: the oldest went


class StatusCallbacks:
    """Queues events and POSTs them to ``url``, signed with ``secret`` (Standard Webhooks)."""

    def __init__(self, url: str, secret: str, kinds: Iterable[str] = DEFAULT_KINDS, *,
                 attempts: int = 6, first_retry: float = 1.0, timeout: float = 5.0,
                 max_queued: int = 10_000) -> None:
        from standardwebhooks.webhooks import Webhook  # only with [events] url

        self.url = url
        self.kinds = frozenset(kinds)
        self.attempts = attempts
        self.first_retry = first_retry
        self.timeout = timeout
        self.counts = DeliveryCounts()
        self._signer = Webhook(_standard_secret(secret))
        self._queue: deque[StatusEvent] = deque(maxlen=max_queued)
        self._wake = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None
        self._closed = False

    def publish(self, call_id: str, kind: str, data: dict[str, Any],
                handoff_id: str | None, at: float) -> None:
        """Queue the event if its kind is pushed; never blocks, never raises."""
        if kind not in self.kinds:
            return
        if len(self._queue) == self._queue.maxlen:
            self.counts.dropped += 1
        if self._closed:
            return
        self._queue.append(StatusEvent(kind, call_id, at, data, handoff_id))
        self._wake.set()
        if self._worker is None or self._worker.done():
            self._worker = asyncio.ensure_future(self._deliver_forever())

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def close(self, grace: float = 2.0) -> None:
        """Give what is queued ``grace`` seconds to go out, then stop (later events are
        not sent)."""
        self._closed = True
        worker = self._worker
        if worker is None:
            return
        deadline = asyncio.get_running_loop().time() + grace
        while self._queue and not worker.done() and asyncio.get_running_loop().time() < deadline:
            await asyncio.sleep(0.05)
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker  # its HTTP client closes

    async def _deliver_forever(self) -> None:
        import httpx

        async with httpx.AsyncClient(timeout=self.timeout) as client:
            while True:
                if not self._queue:
                    self._wake.clear()
                    await self._wake.wait()
                    continue
                event = self._queue.popleft()  # taken now: a full queue drops others
                try:
                    await self._deliver(client, event)
                except Exception:  # a bug or a broken event costs that event, not the rest
                    self.counts.given_up += 1
                    log.exception("status callback %s (%s) could not be sent", event.id,
                                  event.kind)

    async def _deliver(self, client: Any, event: StatusEvent) -> None:
        body = event.body()
        delay = self.first_retry
        for attempt in range(1, self.attempts + 1):
            outcome = await self._post(client, event, body)
            if outcome == "delivered":
                self.counts.delivered += 1
                return
            if outcome == "refused":
                self.counts.refused += 1
                return
            if attempt < self.attempts:
                self.counts.retried += 1
                await asyncio.sleep(delay)
                delay *= 2
        self.counts.given_up += 1
        log.warning("status callback %s (%s) not delivered after %d attempts", event.id,
                    event.kind, self.attempts)

    async def _post(self, client: Any, event: StatusEvent, body: str) -> str:
        import httpx

        sent_at = datetime.now(UTC)
        headers = {"content-type": "application/json", "webhook-id": event.id,
                   "webhook-timestamp": str(int(sent_at.timestamp())),
                   "webhook-signature": self._signer.sign(event.id, sent_at, body)}
        try:
            response = await client.post(self.url, content=body.encode(), headers=headers)
        except (httpx.HTTPError, OSError) as error:
            log.debug("status callback %s: %s", event.id, error)
            return "retry"
        if 200 <= response.status_code < 300:
            return "delivered"
        if response.status_code == 429 or response.status_code >= 500:
            return "retry"
        return "refused"


class CallStatusUrls:
    """Status callbacks to a URL given for one call (``POST /calls`` ``callback_url``,
    ``POST /calls/{id}/events``), signed with the ``[events]`` secret like the global ones.

    A URL given over the API is a request to make warmline open connections: without
    a check, a token holder could aim it at the cloud metadata service or an admin
    port inside the network (SSRF). So only hosts the operator listed in
    ``[events] call_url_hosts`` (globs: ``hooks.example.com``, ``*.crm.example``) are
    taken, over https, or plain http to a loopback address only; no user:password.
    With no list, no per-call URL is accepted at all.
    """

    def __init__(self, secret: str, hosts: Iterable[str], kinds: Iterable[str] = DEFAULT_KINDS,
                 *, attempts: int = 6) -> None:
        self.secret = secret
        self.hosts = tuple(host.lower() for host in hosts)
        self.kinds = frozenset(kinds)
        self.attempts = attempts
        self._by_call: dict[str, StatusCallbacks] = {}
        self._closing: set[asyncio.Task[None]] = set()

    def problem(self, url: str) -> str | None:
        """Why ``url`` may not receive a call's events, or None."""
        import fnmatch
        import ipaddress
        from urllib.parse import urlsplit

        if not self.hosts:
            return "per-call callback URLs are off: list the hosts allowed in " \
                   "[events] call_url_hosts"
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (raises on a bad port)
        except ValueError:
            return f"{url!r} is not a URL"
        host = (parts.hostname or "").lower()
        if parts.scheme not in ("https", "http") or not host:
            return f"{url!r} is not an https:// URL with a host"
        if parts.username is not None or parts.password is not None:
            return "a user or password in the URL is not allowed"
        if parts.scheme == "http":
            try:
                loopback = host in LOOPBACK_NAMES or ipaddress.ip_address(host).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                return "plain http is only allowed to a loopback address; use https"
        if not any(fnmatch.fnmatchcase(host, glob) for glob in self.hosts):
            return f"host {host} is not in [events] call_url_hosts"
        return None

    def set(self, call_id: str, url: str) -> None:
        """Send ``call_id``'s events to ``url`` from now on (checked with :meth:`problem`)."""
        previous = self._by_call.pop(call_id, None)
        if previous is not None:  # what it still holds gets its moment, in the background
            closing = asyncio.ensure_future(previous.close())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        self._by_call[call_id] = StatusCallbacks(url, self.secret, self.kinds,
                                                 attempts=self.attempts)

    def url_of(self, call_id: str) -> str | None:
        sink = self._by_call.get(call_id)
        return sink.url if sink is not None else None

    def publish(self, call_id: str, kind: str, data: dict[str, Any],
                handoff_id: str | None, at: float) -> None:
        sink = self._by_call.get(call_id)
        if sink is not None:
            sink.publish(call_id, kind, data, handoff_id, at)

    async def forget(self, call_id: str) -> None:
        """The call is long over: what is still queued for it gets a moment, then stops."""
        sink = self._by_call.pop(call_id, None)
        if sink is not None:
            await sink.close()

    async def close(self) -> None:
        for call_id in list(self._by_call):
            await self.forget(call_id)


def _standard_secret(secret: str) -> str:
    """``whsec_`` + base64 as Standard Webhooks expects; a plain secret is encoded to it."""
    if secret.startswith("whsec_"):
        return secret
    return "whsec_" + base64.b64encode(secret.encode()).decode()


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
