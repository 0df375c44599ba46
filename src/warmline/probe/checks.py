"""What `warmline probe` found, as plain data: DNS, the OPTIONS round trip, the test call.

Nothing here touches a socket or the loop, so tests assert on these objects and
scripts get them as JSON. ``read_options`` turns the messages of one OPTIONS
exchange into an :class:`OptionsCheck` using ``warmline.sip`` alone: that is the
part the engine's pre-transfer probe would share (see ``warmline.probe``).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

from warmline.media.sdp import SdpError
from warmline.media.sdp import parse as parse_sdp
from warmline.sip.errors import SipParseError
from warmline.sip.headers import parse_auth, split_list
from warmline.sip.message import Request, Response, parse_message

EXIT_OK = 0  # reachable and answering (2xx to OPTIONS; with --call answered, audio back)
EXIT_FAILED = 1  # reachable but refused or failed: a final error, auth, no answer, no audio
EXIT_USAGE = 2  # a bad URI, an unknown trunk, a broken config or --sip
EXIT_DNS = 3  # the name cannot be resolved: no such name, no records, DNS timeout

# What a transfer plan depends on: REFER (blind transfers) is a method in Allow; Replaces
# (warm transfers by REFER with Replaces), timer (session timers) and 100rel (reliable
# provisionals) are option tags in Supported.
METHOD_FEATURES = ("REFER",)
OPTION_FEATURES = ("replaces", "timer", "100rel")
_FEATURE_LABELS = {"REFER": "REFER", "replaces": "Replaces", "timer": "timer", "100rel": "100rel"}
# RFC 3551 static payload types, for an answer without rtpmap lines.
_STATIC_PAYLOADS = {0: "PCMU", 3: "GSM", 4: "G723", 8: "PCMA", 9: "G722", 18: "G729"}


class Seen(NamedTuple):
    """One SIP message the probe's line sent ("out") or received ("in"), and when.

    ``at`` is ``time.perf_counter()``: the loop's clock may tick in whole
    milliseconds (uvloop), too coarse for a round trip on a LAN.
    """

    direction: str
    at: float
    data: bytes


class AuthOutcome(enum.StrEnum):
    NOT_CHALLENGED = "not challenged"
    ACCEPTED = "accepted"  # challenged, answered with the trunk's credentials, let through
    REJECTED = "rejected"  # challenged again after our answer: wrong username or password
    NO_CREDENTIALS = "no credentials"  # challenged, nothing to answer with (no trunk account)
    UNKNOWN = "unknown"  # challenged and answered, but no final answer came


@dataclass(frozen=True)
class DnsCheck:
    """How the next hop was located (RFC 3263); ``reason`` says why it could not be."""

    name: str
    targets: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()
    reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class OptionsCheck:
    """One OPTIONS round trip: the answer and what it says the far end can do."""

    target: str
    status: int  # 408: no answer in time, 503: could not send
    reason: str
    rtt_ms: float | None  # first request out to first answer in; None: nothing came back
    allow: tuple[str, ...] = ()
    supported: tuple[str, ...] = ()
    features: dict[str, bool | None] = field(default_factory=dict)  # None: unknown
    challenged: bool = False
    auth: AuthOutcome = AuthOutcome.NOT_CHALLENGED
    realm: str | None = None
    server: str | None = None  # its Server or User-Agent header

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


@dataclass(frozen=True)
class CallCheck:
    """The short test call: its answer, the codecs, whether audio came back, the hang-up."""

    status: int  # the INVITE's final status; 408 when nothing final came in time
    reason: str
    answered: bool = False
    progress: tuple[int, ...] = ()  # provisional statuses seen (180, 183)
    answer_ms: float | None = None
    codecs: tuple[str, ...] = ()  # what the answer's SDP lists, in its order
    codec: str | None = None  # the one in use
    tone_ms: int = 0
    packets_sent: int = 0
    packets_received: int = 0  # RTP from the far end on our leg
    ended: str = ""  # how the call ended
    problem: str | None = None  # e.g. an answer we could not use

    @property
    def audio_back(self) -> bool:
        return self.packets_received > 0


@dataclass(frozen=True)
class ProbeReport:
    """Everything one probe found; ``exit_code`` and ``verdict`` sum it up."""

    destination: str
    call_requested: bool = False
    request_uri: str | None = None
    trunk: str | None = None
    next_hop: str | None = None
    local: str | None = None  # the address the probe sent from
    dns: DnsCheck | None = None
    options: OptionsCheck | None = None
    call: CallCheck | None = None
    problem: str | None = None  # a usage problem: nothing was sent

    @property
    def exit_code(self) -> int:
        return judge(self)[0]

    @property
    def verdict(self) -> str:
        return judge(self)[1]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["exit_code"], data["verdict"] = judge(self)
        return data


def judge(report: ProbeReport) -> tuple[int, str]:
    """The exit code and one sentence saying why, checked in the order the probe ran."""
    if report.problem is not None:
        return EXIT_USAGE, f"usage: {report.problem}"
    if report.dns is not None and report.dns.reason is not None:
        return EXIT_DNS, f"DNS: {report.dns.name}: {report.dns.reason}"
    options = report.options
    if options is None:
        return EXIT_FAILED, "no OPTIONS was sent"
    if options.auth is AuthOutcome.REJECTED:
        return EXIT_FAILED, f"auth failed: {options.status} {options.reason} to our credentials"
    if not options.ok:
        return EXIT_FAILED, f"OPTIONS: {options.status} {options.reason}"
    if report.call_requested:
        return _judge_call(report.call)
    return EXIT_OK, f"reachable: {options.status} {options.reason}"


def _judge_call(call: CallCheck | None) -> tuple[int, str]:
    if call is None:
        return EXIT_FAILED, "the test call was not placed"
    if not call.answered:
        return EXIT_FAILED, f"call not answered: {call.status} {call.reason}"
    if call.problem is not None:
        return EXIT_FAILED, f"call answered, but {call.problem}"
    if not call.audio_back:
        return EXIT_FAILED, "call answered, but no audio came back"
    return EXIT_OK, f"reachable; call answered with {call.codec}, audio came back"


# ---------------------------------------------------------------- reading OPTIONS
def read_options(target: str, exchange: Sequence[Seen], status: int, reason: str,
                 final: Response | None) -> OptionsCheck:
    """The check from what went out and came back, the final status and its answer.

    ``exchange`` may hold other traffic: only OPTIONS requests out and answers
    to OPTIONS in are read.
    """
    requests, answers = _options_messages(exchange)
    challenges = [(at, r) for at, r in answers if r.status in (401, 407)]
    rtt = (answers[0][0] - requests[0][0]) * 1000 if requests and answers else None
    allow, supported = _capabilities(final)
    return OptionsCheck(
        target, status, reason, None if rtt is None else round(rtt, 2), allow, supported,
        _features(final, allow, supported), bool(challenges),
        _auth_outcome(bool(challenges), _answered_challenge(requests), final),
        _realm(challenges[0][1]) if challenges else None,
        (final.get("server") or final.get("user-agent")) if final is not None else None)


def _options_messages(exchange: Sequence[Seen]
                      ) -> tuple[list[tuple[float, Request]], list[tuple[float, Response]]]:
    requests: list[tuple[float, Request]] = []
    answers: list[tuple[float, Response]] = []
    for seen in exchange:
        try:
            message = parse_message(seen.data)
        except SipParseError:
            continue
        if isinstance(message, Request) and seen.direction == "out" \
                and message.method == "OPTIONS":
            requests.append((seen.at, message))
        elif isinstance(message, Response) and seen.direction == "in" \
                and _cseq_method(message) == "OPTIONS":
            answers.append((seen.at, message))
    return requests, answers


def _cseq_method(response: Response) -> str | None:
    try:
        return response.cseq.method
    except SipParseError:
        return None


def _capabilities(final: Response | None) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Allow and Supported as listed (read leniently: a probe reports, it does not judge)."""
    if final is None:
        return (), ()
    allow = tuple(item for value in final.values("allow") for item in split_list(value))
    supported = tuple(item for value in final.values("supported")
                      for item in split_list(value))
    return allow, supported


def _features(final: Response | None, allow: Sequence[str],
              supported: Sequence[str]) -> dict[str, bool | None]:
    """Yes/no per feature; unknown (None) when the answer does not say.

    Allow decides REFER when present. Supported decides the option tags when
    present, and so does a 2xx without it (it supports none); a refusal
    without Supported (a 401, a 403) says nothing either way.
    """
    methods = {item.upper() for item in allow}
    options = {item.lower() for item in supported}
    methods_known = final is not None and final.get("allow") is not None
    options_known = final is not None and (final.get("supported") is not None
                                           or final.is_success)
    features: dict[str, bool | None] = {}
    for method in METHOD_FEATURES:
        features[_FEATURE_LABELS[method]] = (method in methods) if methods_known else None
    for option in OPTION_FEATURES:
        features[_FEATURE_LABELS[option]] = (option in options) if options_known else None
    return features


def _answered_challenge(requests: Sequence[tuple[float, Request]]) -> bool:
    return any(r.get("authorization") is not None or r.get("proxy-authorization") is not None
               for _, r in requests)


def _auth_outcome(challenged: bool, answered: bool, final: Response | None) -> AuthOutcome:
    if not challenged:
        return AuthOutcome.NOT_CHALLENGED
    if not answered:
        return AuthOutcome.NO_CREDENTIALS
    if final is None:
        return AuthOutcome.UNKNOWN
    return AuthOutcome.REJECTED if final.status in (401, 407) else AuthOutcome.ACCEPTED


def _realm(challenge: Response) -> str | None:
    header = "www-authenticate" if challenge.status == 401 else "proxy-authenticate"
    text = challenge.get(header)
    if text is None:
        return None
    try:
        return parse_auth(text).params.get("realm")
    except SipParseError:
        return None


# ---------------------------------------------------------------- reading an SDP answer
def answer_codecs(sdp: bytes | None) -> tuple[str, ...]:
    """Every format the answer's audio streams list, by name, in its order."""
    if not sdp:
        return ()
    try:
        session = parse_sdp(sdp)
    except SdpError:
        return ()
    names: list[str] = []
    for media in session["media"]:
        if media.get("type") != "audio" or not media.get("port"):
            continue
        mapped = {rtp["payload"]: str(rtp.get("codec", "")) for rtp in media.get("rtp", [])
                  if isinstance(rtp.get("payload"), int)}  # "a=rtpmap: PCMU/8000": no number
        for item in str(media.get("payloads", "")).split():
            payload = int(item) if item.isascii() and item.isdigit() and len(item) <= 3 else -1
            names.append(mapped.get(payload) or _STATIC_PAYLOADS.get(payload, item))
    return tuple(dict.fromkeys(names))
