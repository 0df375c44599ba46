"""A handoff: one request to move a call, what it asked for and everything that happened.

Users of today's platforms cannot tell a 202 from a transfer that worked, or
why a caller was dropped. A handoff records each step as a timestamped event
(requested, ringing, answered, connected, human first word, fallback,
completed or failed with the reason and the SIP status) so the records and
the KPIs read facts, not guesses. Status only moves forward; a handoff that
ended stays ended.

The vocabulary (modes, acceptance, fallback actions, statuses) is enums; the
rules for a destination live here once, and the API and the config file
check against them.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any
from urllib.parse import urlsplit

from warmline.sip.errors import SipParseError
from warmline.sip.uri import SipUri, TelUri, parse_uri

log = logging.getLogger("warmline.transfer")
MAX_CONTEXT_BYTES = 64 * 1024
HANDOFF_HEADER = "X-Warmline-Handoff"  # the handoff id, in every request a transfer sends


class TransferMode(StrEnum):
    BLIND = "blind"  # REFER the caller's side, followed to a real outcome by NOTIFY
    BRIDGE = "bridge"  # warmline calls the human and bridges the media
    WARM = "warm"  # a whisper (and acceptance) for the human first
    ATTENDED = "attended"  # a brief 3-way in which the AI introduces the caller
    AGENT = "agent"  # another AI agent takes the call: a ws:// or wss:// bot, or agent:NAME


class Acceptance(StrEnum):
    NONE = "none"
    DTMF = "dtmf"  # the human presses 1; any other digit declines
    SPEECH = "speech"  # the human speaks first


class ConnectBy(StrEnum):
    BRIDGE = "bridge"  # warmline keeps the media
    REPLACES = "replaces"  # REFER with Replaces (RFC 3891) sends the caller's phone over


class FallbackKind(StrEnum):
    AI = "ai"
    VOICEMAIL = "voicemail"
    CALLBACK = "callback"
    TICKET = "ticket"


class CallerIdMode(StrEnum):
    ORIGINAL = "original"
    OVERRIDE = "override"
    TRUNK = "trunk"


class HandoffStatus(StrEnum):
    REQUESTED = "requested"
    ACCEPTED = "accepted"  # a REFER got 202
    RINGING = "ringing"
    ANSWERED = "answered"
    WHISPERING = "whispering"
    AWAITING_ACCEPTANCE = "awaiting_acceptance"
    THREE_WAY = "three_way"
    REPLACING = "replacing"  # REFER with Replaces sent, waiting for its NOTIFY
    CONNECTED = "connected"
    COMPLETED = "completed"
    FAILED = "failed"


ENDED = frozenset({HandoffStatus.COMPLETED, HandoffStatus.FAILED})


MAX_GROUP = 20  # URIs rung at once by one attempt (simultaneous ring)


class Problem(Enum):
    """Why a transfer request cannot be done; the API maps each to its HTTP status."""

    INVALID = "invalid"  # a field is wrong (named in the message)
    TOO_LARGE = "too large"  # the context is over MAX_CONTEXT_BYTES
    UNKNOWN_CALL = "unknown call"
    CONFLICT = "conflict"  # the call cannot take a transfer now
    FORBIDDEN = "forbidden"  # the destination is not on the allow-list (transfer/policy.py)


class HandoffError(ValueError):
    """A transfer request that cannot be done; ``problem`` says what kind."""

    def __init__(self, message: str, problem: Problem = Problem.INVALID) -> None:
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True, slots=True)
class HandoffEvent:
    at: float  # Unix time, for the records
    kind: str
    detail: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {**self.detail, "at": self.at, "kind": self.kind}  # detail never hides when


AGENT_SCHEMES = ("ws", "wss", "agent")
MAX_AGENT_NAME = 64


def is_agent_uri(uri: str) -> bool:
    """Whether ``uri`` names another AI agent (a bot's WebSocket, or agent:NAME)."""
    scheme, sep, _ = uri.partition(":")
    return bool(sep) and scheme.lower() in AGENT_SCHEMES


def agent_uri_problem(uri: str) -> str | None:
    """What is wrong with ``uri`` as another agent to hand a caller to, or None.

    ``ws://host[:port]/path`` or ``wss://...`` (a bot speaking Twilio Media
    Streams framing), or ``agent:NAME`` for an ``[agents.NAME]`` of the config
    (the engine refuses a name it does not know).
    """
    scheme, _, rest = uri.partition(":")
    if scheme.lower() == "agent":
        name = rest
        if not name or len(name) > MAX_AGENT_NAME or not all(
                char.isalnum() or char in "-_." for char in name):
            return (f"{uri!r}: agent:NAME needs a name of letters, digits, '-', '_' or '.' "
                    f"(at most {MAX_AGENT_NAME})")
        return None
    parsed = urlsplit(uri)
    try:
        port = parsed.port
    except ValueError:
        return f"{uri!r} has a bad port"
    if not rest.startswith("//") or not parsed.hostname:
        return f"{uri!r} must be ws://HOST[:PORT]/PATH or wss://..."
    if parsed.username or parsed.password:
        return (f"{uri!r} carries credentials (user:password@): put the bot's token in the "
                "query of an [agents.NAME] url (asked for as agent:NAME, the URL stays out "
                "of the records)")
    if any(char.isspace() for char in uri) or port == 0:
        return f"{uri!r} is not a usable WebSocket URL"
    return None


def destination_uri_problem(uri: str) -> str | None:
    """What is wrong with ``uri`` as a place to send a caller, or None.

    The one rule the API, the config file and in-process callers share. A tel:
    number is fine here; the engine refuses it when no trunk serves it. Another
    agent (ws://, wss://, agent:NAME) is checked by :func:`agent_uri_problem`.
    """
    if is_agent_uri(uri):
        return agent_uri_problem(uri)
    try:
        parsed = parse_uri(uri)
    except SipParseError as error:
        return f"{uri!r} is not a SIP URI ({error})"
    if isinstance(parsed, TelUri):
        return None if parsed.number.strip("+") else f"{uri!r} has no number"
    if not isinstance(parsed, SipUri) or not parsed.host:
        return f"{uri!r} must be a sip:, sips: or tel: URI"
    if parsed.headers or parsed.param("method") is not None:
        names = ", ".join(name for name, _ in parsed.headers) or "method"
        return (f"{uri!r} carries URI headers ({names}): they are never sent (RFC 3261 "
                f"§19.1.5); give what the human should know as context")
    return None


def _enum_or_raw(kind: type[StrEnum], value: Any) -> Any:
    """``value`` as a member of ``kind`` when it names one (validate() reports the rest)."""
    try:
        return kind(value)
    except ValueError:
        return value


def _choices(kind: type[StrEnum]) -> str:
    return ", ".join(member.value for member in kind)


@dataclass
class Destination:
    """Where one attempt goes and how.

    For a warm transfer: ``whisper`` is what the human hears before being
    connected (None: a summary from the context); ``accept`` says whether the
    human must accept (DTMF 1 or speaking first) within ``accept_timeout``
    seconds; ``connect`` is how the two are joined (warmline's bridge, or REFER
    with Replaces when the caller's phone supports it, bridged when it does not
    or the REFER fails). Plain strings are taken for the enum fields.
    """

    uri: str
    mode: TransferMode
    timeout: float
    whisper: str | None = None
    accept: Acceptance = Acceptance.NONE
    accept_timeout: float = 10.0
    connect: ConnectBy = ConnectBy.BRIDGE
    probe: bool = False  # OPTIONS first; a destination that does not answer 2xx is skipped
    # rung at the same time as ``uri`` (a group: the on-call staff); the first to answer
    # takes the call, the others are CANCELed "completed elsewhere"
    ring_with: tuple[str, ...] = ()

    @property
    def uris(self) -> tuple[str, ...]:
        """Every URI this attempt rings at once (``uri`` first)."""
        return (self.uri, *self.ring_with)

    def __post_init__(self) -> None:
        self.mode = _enum_or_raw(TransferMode, self.mode)
        self.accept = _enum_or_raw(Acceptance, self.accept)
        self.connect = _enum_or_raw(ConnectBy, self.connect)

    @property
    def to_agent(self) -> bool:
        """Another AI agent takes the call (mode agent; ``uri`` a ws:// URL or agent:NAME)."""
        return self.mode is TransferMode.AGENT

    def validate(self, where: str = "to") -> None:
        if self.to_agent != is_agent_uri(self.uri):
            raise HandoffError(
                f"{where}: {self.uri!r} is an agent (ws://, wss://, agent:NAME) and needs "
                "mode agent" if is_agent_uri(self.uri) else
                f"{where}: mode agent needs a ws://, wss:// or agent:NAME destination")
        if self.to_agent and (self.ring_with or self.probe):
            raise HandoffError(f"{where}: ring_with and probe are for SIP destinations, "
                               "not for an agent")
        if any(is_agent_uri(uri) for uri in self.ring_with):
            raise HandoffError(f"{where}: ring_with rings SIP destinations, not agents")
        for uri in self.uris:
            problem = destination_uri_problem(uri)
            if problem is not None:
                raise HandoffError(f"{where}: {problem}")
        if len({uri.lower() for uri in self.uris}) != len(self.uris):
            raise HandoffError(f"{where}: a URI is rung twice in one group")
        if self.ring_with and self.mode is TransferMode.BLIND:
            raise HandoffError(f"{where}: ring_with needs mode bridge, warm or attended "
                               "(a REFER sends the caller to one place)")
        if self.ring_with and self.probe:
            raise HandoffError(f"{where}: probe is for one destination, not a ring_with group")
        if len(self.uris) > MAX_GROUP:
            raise HandoffError(f"{where}: at most {MAX_GROUP} URIs are rung at once")
        # each message is written only for a check that fails: every transfer passes here
        checks: list[tuple[bool, Callable[[], str]]] = [
            (isinstance(self.mode, TransferMode),
             lambda: f"mode {self.mode!r} is not one of {_choices(TransferMode)}"),
            (0 < self.timeout <= 600, lambda: f"timeout {self.timeout} is not in (0, 600]"),
            (isinstance(self.accept, Acceptance),
             lambda: f"accept {self.accept!r} is not one of {_choices(Acceptance)}"),
            (0 < self.accept_timeout <= 120, lambda: "accept_timeout is not in (0, 120]"),
            (isinstance(self.connect, ConnectBy),
             lambda: f"connect {self.connect!r} is not one of {_choices(ConnectBy)}")]
        for ok, problem_text in checks:
            if not ok:
                raise HandoffError(f"{where}: {problem_text()}")


@dataclass(frozen=True)
class FallbackAction:
    """A fallback step that is not another destination."""

    kind: FallbackKind
    max_seconds: float = 60.0  # voicemail: the longest message kept
    delay_seconds: float = 3600.0  # callback: how long from now, when ``at`` is not given
    at: float | None = None  # callback: Unix time; voicemail: the callback promised by then

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", FallbackKind(self.kind))
        except ValueError:
            raise ValueError(f"fallback: {self.kind!r} is not one of "
                             f"{_choices(FallbackKind)}") from None


FallbackStep = Destination | FallbackAction


@dataclass(frozen=True)
class CallerId:
    """Who the human's phone shows as calling (carriers lose this most).

    ORIGINAL: the caller's own From (and P-Asserted-Identity when the caller's
    INVITE had one); OVERRIDE: ``uri``; TRUNK: ``uri`` (a number the trunk
    accepts) with the original caller carried in X-Warmline-Original-Caller.
    ``diversion`` adds Diversion (RFC 5806) and ``history_info`` History-Info
    (RFC 7044) naming the AI as the diverting party, for PBXs that route or
    display by them. ``identity`` (ORIGINAL only) passes the caller's signed
    Identity header (RFC 8224) on unchanged; off, the human's side sees none.
    """

    mode: CallerIdMode = CallerIdMode.ORIGINAL
    uri: str | None = None
    diversion: bool = False
    history_info: bool = False
    identity: bool = True

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "mode", CallerIdMode(self.mode))
        except ValueError:
            raise HandoffError(f"caller_id.mode: {self.mode!r} is not one of "
                               f"{_choices(CallerIdMode)}") from None
        if self.mode is not CallerIdMode.ORIGINAL and not self.uri:
            raise HandoffError(f"caller_id.uri: needed for mode {self.mode.value!r}")


@dataclass(eq=False)
class Handoff:
    """``first`` None: nobody to call (after hours): the fallback chain runs at once.

    ``fallback`` takes plain action names too ("ai", "voicemail", ...).
    ``headers`` is what the human's INVITE carries of the context (the brain
    builds them within the header budget); without them the handoff id alone.
    """

    call_id: str
    first: Destination | None
    final: bool = True
    fallback: list[FallbackStep | str] = field(default_factory=list)
    context: dict[str, Any] = field(default_factory=dict)
    caller_id: CallerId = field(default_factory=CallerId)
    packet: dict[str, Any] | None = None  # the context packet (brain/context.py)
    announce: str | None = None  # said to the caller before anything is dialled
    id: str = field(default_factory=lambda: f"handoff-{secrets.token_hex(8)}")  # unguessable
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16))  # screen-pop access
    screen_pop: str | None = None  # the URL of the full packet, when the API is public
    headers: list[tuple[str, str]] = field(default_factory=list)
    webhook_sent: bool = False
    on_finish: Callable[[Handoff], None] | None = None  # the trigger log hears the outcome
    listener: Callable[[Handoff, HandoffEvent], None] | None = None  # the records, each event
    status: HandoffStatus = HandoffStatus.REQUESTED
    reason: str | None = None
    sip_status: int | None = None
    attempt: Destination | None = None
    events: list[HandoffEvent] = field(default_factory=list)
    agent_report: str | None = None  # what another agent said when it handed the caller back

    def __post_init__(self) -> None:
        self.attempt = self.first
        first = self.first
        self.emit("requested", to=first.uri if first else None,
                  mode=first.mode if first else None, final=self.final)

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    @property
    def context_headers(self) -> list[tuple[str, str]]:
        """The headers the human's INVITE carries (the handoff id at least)."""
        return self.headers or [(HANDOFF_HEADER, self.id)]

    def emit(self, kind: str, **detail: Any) -> None:
        event = HandoffEvent(time.time(), kind, detail)
        self.events.append(event)
        if self.listener is not None:
            self.listener(self, event)

    def progress(self, status: HandoffStatus, **detail: Any) -> None:
        """A step of the current attempt (ringing, answered, connected)."""
        if self.ended:
            return
        self.status = HandoffStatus(status)
        self.emit(self.status.value, **detail)

    def finish(self, status: HandoffStatus, reason: str, sip_status: int | None = None
               ) -> None:
        if self.ended:
            return
        self.status, self.reason, self.sip_status = HandoffStatus(status), reason, sip_status
        self.emit(self.status.value, reason=reason, sip_status=sip_status)
        if self.on_finish is not None:
            self.on_finish(self)

    def steps(self) -> list[FallbackStep]:
        """The fallback chain with action names made into actions."""
        return [step if isinstance(step, Destination | FallbackAction)
                else FallbackAction(FallbackKind(step)) for step in self.fallback]

    def validate(self) -> None:
        """HandoffError (INVALID, TOO_LARGE) naming the field, before anything is dialled."""
        if self.first is None and not self.fallback:
            raise HandoffError("to: no destination and no fallback to run")
        if self.first is not None:
            self.first.validate("to")
        for index, step in enumerate(self.fallback):
            where = f"fallback[{index}]"
            if isinstance(step, Destination):
                step.validate(where)
            elif isinstance(step, str) and step not in set(FallbackKind):
                raise HandoffError(f"{where}: {step!r} is not a destination or one of "
                                   f"{_choices(FallbackKind)}")
        try:
            size = len(json.dumps(self.context))
        except (TypeError, ValueError) as error:
            raise HandoffError(f"context: not JSON ({error})") from None
        if size > MAX_CONTEXT_BYTES:
            raise HandoffError(f"context: {size} bytes, the limit is {MAX_CONTEXT_BYTES}",
                               Problem.TOO_LARGE)

    def whisper_text(self) -> str:
        """What the human hears first when the attempt does not say."""
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
        return {"id": self.id, "call_id": self.call_id, "status": self.status.value,
                "mode": str(attempt.mode) if attempt else None,
                "to": attempt.uri if attempt else None, "final": self.final,
                "reason": self.reason, "sip_status": self.sip_status, "context": self.context,
                "packet": self.packet, "screen_pop": self.screen_pop,
                "events": [event.as_dict() for event in self.events]}

    def as_row(self) -> dict[str, Any]:
        """One line of the dashboard's handoff table: who, where to, why, how it ended."""
        return row_of(self.as_dict())

    @property
    def first_word_waits(self) -> tuple[float, ...]:
        """Seconds from the request to each first word a human said (for /metrics)."""
        start = self.events[0].at if self.events else 0.0
        return tuple(event.at - start for event in self.events
                     if event.kind == "human_first_word")


def row_of(shown: dict[str, Any]) -> dict[str, Any]:
    """The table row of a handoff from what ``as_dict`` shows of it (a record keeps only
    that): who, where to, why, how long the caller waited and who answered."""
    packet = shown["packet"] or {}
    events: list[dict[str, Any]] = shown["events"]
    return {"id": shown["id"], "call_id": shown["call_id"], "status": shown["status"],
            "to": shown["to"], "reason": shown["reason"],
            "intent": (packet.get("intent") or {}).get("name"),
            "summary": packet.get("summary"), "sip_status": shown["sip_status"],
            "wait_s": _wait(events), "answered_by": _answered_by(events, shown["to"])}


def _wait(events: list[dict[str, Any]]) -> float | None:
    """Seconds from the request to the caller being connected, or to the end when nobody
    was; None while it runs."""
    for event in events:
        if event["kind"] in ("connected", "completed", "failed"):
            return round(float(event["at"]) - float(events[0]["at"]), 1)
    return None


def _answered_by(events: list[dict[str, Any]], attempted: str | None) -> str | None:
    """Who answered (in a ring group: the member who won), if anybody did."""
    answered = [event for event in events if event["kind"] == "answered"]
    if not answered:
        return None
    by = answered[-1].get("by") or answered[-1].get("to")
    return str(by) if by else attempted


@dataclass(frozen=True, slots=True, eq=False)
class HandoffRecord:
    """A handoff of a call already let go, as GET /handoffs, GET /handoffs/{id} and its
    screen-pop still show it until the call leaves the listings.

    Its document (``as_dict``; its table row is read from that) is kept as JSON text: a
    string is one object the garbage collector never walks, where the whole handoff
    (events and their details, context, packet, destinations) is a few dozen. At 300
    calls a second the two minutes of listed calls held ~110 MB more as whole handoffs."""

    id: str
    call_id: str
    token: str = field(repr=False)
    status: HandoffStatus
    first_word_waits: tuple[float, ...]
    document: str  # as_dict(), as JSON

    @classmethod
    def of(cls, handoff: Handoff) -> HandoffRecord:
        return cls(handoff.id, handoff.call_id, handoff.token, handoff.status,
                   handoff.first_word_waits, _as_json(handoff.as_dict()))

    @property
    def ended(self) -> bool:
        return self.status in ENDED

    def as_dict(self) -> dict[str, Any]:
        document: dict[str, Any] = json.loads(self.document)
        return document

    def as_row(self) -> dict[str, Any]:
        return row_of(self.as_dict())


ShownHandoff = Handoff | HandoffRecord  # what the API shows: whole, or as recorded


def _as_json(document: dict[str, Any]) -> str:
    """Compact JSON that never fails: it runs as a call is let go, on the way of the next
    call's INVITE. A value JSON has no form for (an object some step put in an event's
    detail) becomes its str(), a key of none is skipped; a part that still cannot be
    written (a structure that contains itself) is shown as null, and the handoff as
    ``"unwritable"`` naming those parts."""
    try:
        return _compact(document)
    except (ValueError, TypeError, RecursionError):
        pass
    unwritable = []
    for key, value in document.items():
        try:
            _compact(value)
        except (ValueError, TypeError, RecursionError):
            unwritable.append(key)
    log.warning("handoff %s: %s kept as null (not writable as JSON)", document.get("id"),
                ", ".join(unwritable))
    return _compact({**{key: None for key in unwritable}, "unwritable": unwritable,
                     **{k: v for k, v in document.items() if k not in unwritable}})


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str, skipkeys=True)
