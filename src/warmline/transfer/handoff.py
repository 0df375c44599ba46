"""A handoff: one request to move a call, what it asked for and everything that happened.

Users of today's platforms cannot tell a 202 from a transfer that worked, or
why a caller was dropped. A handoff records each step as a timestamped event
(requested, ringing, answered, connected, human first word, fallback,
completed or failed with the reason and the SIP status) so the records and
the KPIs read facts, not guesses. Status only moves forward; a handoff that
ended stays ended.
"""

from __future__ import annotations

import itertools
import json
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from warmline.sip.errors import SipParseError
from warmline.sip.uri import SipUri, parse_uri

MODES = ("blind", "bridge", "warm", "attended")
MAX_CONTEXT_BYTES = 64 * 1024
ENDED = frozenset({"completed", "failed"})
_ids = itertools.count(1)


class HandoffError(ValueError):
    """A transfer request that cannot be done; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class HandoffEvent:
    at: float  # Unix time, for the records
    kind: str
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"at": self.at, "kind": self.kind, **self.detail}


ACCEPTANCE = ("none", "dtmf", "speech")


@dataclass
class Destination:
    """Where one attempt goes and how.

    For a warm transfer: ``whisper`` is what the human hears before being
    connected (None: a summary from the context); ``accept`` is "none",
    "dtmf" (the human presses 1; any other digit declines) or "speech" (the
    human speaks first), within ``accept_timeout`` seconds; ``connect`` is
    "bridge" (warmline keeps the media) or "replaces" (the caller's phone is
    sent to the human with REFER and Replaces when it supports that, and
    bridged when it does not or the REFER fails).
    """

    uri: str
    mode: str
    timeout: float
    whisper: str | None = None
    accept: str = "none"
    accept_timeout: float = 10.0
    connect: str = "bridge"  # warm: "bridge", or "replaces" (REFER with Replaces, RFC 3891)
    probe: bool = False  # OPTIONS first; a destination that does not answer 2xx is skipped

    def validate(self, where: str = "to") -> None:
        try:
            uri = parse_uri(self.uri)
        except SipParseError as error:
            raise HandoffError(f"{where}: {self.uri!r} is not a SIP URI ({error})", 422) \
                from None
        if not isinstance(uri, SipUri) or not uri.host:
            raise HandoffError(f"{where}: {self.uri!r} must be a sip: or sips: URI", 422)
        checks = [(self.mode in MODES, f"mode {self.mode!r} is not one of {', '.join(MODES)}"),
                  (0 < self.timeout <= 600, f"timeout {self.timeout} is not in (0, 600]"),
                  (self.accept in ACCEPTANCE, f"accept {self.accept!r} is not one of "
                                              f"{', '.join(ACCEPTANCE)}"),
                  (0 < self.accept_timeout <= 120, "accept_timeout is not in (0, 120]"),
                  (self.connect in ("bridge", "replaces"), f"connect {self.connect!r} is "
                                                           "not bridge or replaces")]
        for ok, problem in checks:
            if not ok:
                raise HandoffError(f"{where}: {problem}", 422)


CALLER_ID_MODES = ("original", "override", "trunk")


ACTIONS = ("ai", "voicemail", "callback", "ticket")


@dataclass(frozen=True)
class FallbackAction:
    """A fallback step that is not another destination."""

    kind: str  # "ai", "voicemail", "callback" or "ticket"
    max_seconds: float = 60.0  # voicemail: the longest message kept
    delay_seconds: float = 3600.0  # callback: how long from now, when ``at`` is not given
    at: float | None = None  # callback: Unix time; voicemail: the callback promised by then

    def __post_init__(self) -> None:
        if self.kind not in ACTIONS:
            raise ValueError(f"fallback: {self.kind!r} is not one of {', '.join(ACTIONS)}")


@dataclass(frozen=True)
class CallerId:
    """Who the human's phone shows as calling (carriers lose this most).

    "original": the caller's own From (and P-Asserted-Identity when the
    caller's INVITE had one); "override": ``uri``; "trunk": ``uri`` (a number
    the trunk accepts) with the original caller carried in
    X-Warmline-Original-Caller. ``diversion`` adds Diversion (RFC 5806) and
    ``history_info`` History-Info (RFC 7044) naming the AI as the diverting
    party, for PBXs that route or display by them.
    """

    mode: str = "original"
    uri: str | None = None
    diversion: bool = False
    history_info: bool = False

    def __post_init__(self) -> None:
        if self.mode not in CALLER_ID_MODES:
            raise HandoffError(f"caller_id.mode: {self.mode!r} is not one of "
                               f"{', '.join(CALLER_ID_MODES)}", 422)
        if self.mode != "original" and not self.uri:
            raise HandoffError(f"caller_id.uri: needed for mode {self.mode!r}", 422)


@dataclass(eq=False)
class Handoff:
    """``first`` None: nobody to call (after hours): the fallback chain runs at once."""

    call_id: str
    first: Destination | None
    final: bool = True
    fallback: list[Destination | FallbackAction | str] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    caller_id: CallerId = field(default_factory=CallerId)
    packet: dict[str, Any] | None = None  # the context packet (brain/context.py)
    announce: str | None = None  # said to the caller before anything is dialled
    id: str = field(default_factory=lambda: f"handoff-{next(_ids)}")
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))  # screen-pop access
    screen_pop: str | None = None  # the URL of the full packet, when the API is public
    webhook_sent: bool = False
    on_finish: Callable[[Handoff], None] | None = None  # the trigger log hears the outcome
    listener: Callable[[Handoff, HandoffEvent], None] | None = None  # the records, each event
    status: str = "requested"
    reason: str | None = None
    sip_status: int | None = None
    attempt: Destination | None = None
    events: list[HandoffEvent] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.attempt = self.first
        first = self.first
        self.emit("requested", to=first.uri if first else None,
                  mode=first.mode if first else None, final=self.final)

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    def emit(self, kind: str, **detail: Any) -> None:
        event = HandoffEvent(time.time(), kind, detail)
        self.events.append(event)
        if self.listener is not None:
            self.listener(self, event)

    def progress(self, status: str, **detail: Any) -> None:
        """A step of the current attempt (ringing, answered, connected)."""
        if self.ended:
            return
        self.status = status
        self.emit(status, **detail)

    def finish(self, status: str, reason: str, sip_status: int | None = None) -> None:
        if self.ended:
            return
        self.status, self.reason, self.sip_status = status, reason, sip_status
        self.emit(status, reason=reason, sip_status=sip_status)
        if self.on_finish is not None:
            self.on_finish(self)

    def validate(self) -> None:
        """HandoffError (422, 413) naming the field, before anything is dialled."""
        for index, step in enumerate([self.first, *self.fallback]):
            where = "to" if index == 0 else f"fallback[{index - 1}]"
            if step is None and not self.fallback:
                raise HandoffError("to: no destination and no fallback to run", 422)
            if isinstance(step, Destination):
                step.validate(where)
            elif isinstance(step, str) and step not in ACTIONS:
                raise HandoffError(f"{where}: {step!r} is not a destination or one of "
                                   f"{', '.join(ACTIONS)}", 422)
        try:
            size = len(json.dumps(self.context))
        except (TypeError, ValueError) as error:
            raise HandoffError(f"context: not JSON ({error})", 422) from None
        if size > MAX_CONTEXT_BYTES:
            raise HandoffError(f"context: {size} bytes, the limit is {MAX_CONTEXT_BYTES}", 413)

    def whisper_text(self) -> str:
        """What the human hears first when the attempt does not say (issue 5 refines it)."""
        for key in ("whisper", "summary"):
            value = self.context.get(key)
            if isinstance(value, str) and value.strip():
                return value.strip()
        summary = (self.packet or {}).get("summary")
        if isinstance(summary, str) and summary:
            return summary
        intent = self.context.get("intent")
        about = f" about {intent}" if isinstance(intent, str) and intent else ""
        return f"Incoming transfer from the AI agent{about}."

    def as_dict(self) -> dict[str, Any]:
        attempt = self.attempt or self.first
        return {"id": self.id, "call_id": self.call_id, "status": self.status,
                "mode": attempt.mode if attempt else None,
                "to": attempt.uri if attempt else None, "final": self.final,
                "reason": self.reason, "sip_status": self.sip_status, "context": self.context,
                "packet": self.packet, "screen_pop": self.screen_pop,
                "events": [event.as_dict() for event in self.events]}
