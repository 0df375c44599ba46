"""warmline.toml: the whole engine in one validated file.

Every key is checked when the file is loaded (pydantic, unknown keys
refused), and every problem is reported with the file, the line and the
dotted key, all at once, so a broken config never starts a half-working
engine. `warmline config check FILE` runs the same checks and exits 2 on
the first broken file. The example, with every key commented, is
`warmline.example.toml` at the top of the repository.
"""

from __future__ import annotations

import os
import re
import tomllib
from datetime import date, time
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from warmline.agents.handoff import AgentSpec
from warmline.brain.delivery import HeaderBudget
from warmline.brain.escalation import EscalationPolicy
from warmline.brain.routing import Department, Hours, Router, RoutingError
from warmline.brain.status_events import StatusCallbackSettings
from warmline.brain.triggers import ComplexityRule, TriggerConfig
from warmline.calls.recording import DEFAULT_CONSENT, RecordingMode, RecordingSettings
from warmline.calls.trunks import Trunk, Trunks
from warmline.cluster.limits import LimitTable, destination_key
from warmline.cluster.settings import DEFAULT_PREFIX, ClusterSettings, default_node_id
from warmline.media.player import AudioFileError, load_wav
from warmline.media.relay import PortRange
from warmline.media.rtpengine import parse_ng_address
from warmline.media.sdes import SrtpPolicy
from warmline.sip.access import LOOPBACK, AccessMode, parse_networks
from warmline.sip.auth import Credentials
from warmline.sip.errors import SipParseError
from warmline.sip.session_timer import SessionTimerSettings
from warmline.sip.uri import SipUri, TelUri, is_digits, is_ip_address, parse_uri
from warmline.transfer.callback_dialler import CallbackSettings
from warmline.transfer.callback_schedule import CallbackPolicy
from warmline.transfer.handoff import (
    Acceptance,
    ConnectBy,
    Destination,
    FallbackKind,
    HandoffError,
    TransferMode,
    agent_uri_problem,
    is_agent_uri,
)
from warmline.transfer.outbound import OutboundPolicy
from warmline.transfer.policy import DestinationPattern, DestinationPolicy, PolicyError
from warmline.transport.listen import ListenSpecError, parse_host_port, parse_listen


class ConfigError(ValueError):
    """Problems with a config file, each as 'file:line: key: what is wrong'."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def read_secret(key: str, env: str | None, file: str | None) -> str | None:
    """A secret from the environment variable ``env`` or the file ``file`` (trailing
    newline stripped); None when neither is given. Never from the config file itself
    or a command-line flag, which other users of the machine can read (``ps``).
    ValueError naming ``key`` when the variable is unset or the file unreadable."""
    if env:
        value = os.environ.get(env)
        if value is None:
            raise ValueError(f"{key}_env: {env} is not set")
        return value
    if file:
        try:
            return Path(file).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise ValueError(f"{key}_file: cannot read {file}: {error.strerror}") from None
    return None


def _no_inline_secret(data: Any, key: str) -> Any:
    """A ``key = "..."`` secret written into the file is refused, saying what to use."""
    if isinstance(data, dict) and key in data:
        raise ValueError(f"{key}: secrets are not read from the config file; "
                         f"give {key}_env (an environment variable) or {key}_file")
    return data


class SipAccount(_Strict):
    """Who may answer our digest challenge on a listener with access = "challenge"."""

    username: str = Field(min_length=1)
    password_env: str | None = None
    password_file: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> SipAccount:
        if bool(self.password_env) == bool(self.password_file):
            raise ValueError("give password_env or password_file (one of them)")
        return self

    def password(self, index: int) -> str:
        """The password; ValueError naming the key when it is missing or empty (an empty
        password would let anyone who knows the username in)."""
        key = f"sip.accounts.{index}.password"
        value = read_secret(key, self.password_env, self.password_file)
        if not value:
            raise ValueError(f"{key}: empty")
        return value


class SipSection(_Strict):
    listen: list[str] = Field(default_factory=lambda: ["udp:127.0.0.1:5070"], min_length=1)
    # RFC 4028: a call not refreshed within this many seconds is ended (0: no session timer)
    session_expires: int = Field(1800, ge=0, le=86400)
    min_se: int = Field(90, ge=90, le=86400)  # the shortest interval accepted (422 below)
    # networks (CIDR) whose P-Asserted-Identity is believed (RFC 3325): a carrier's SBC, a
    # PBX; from anyone else it is dropped and the human sees the caller's From
    trusted_identity: list[str] = Field(default_factory=list)
    # sources whose calls and OPTIONS are taken without a challenge (sip/access.py)
    trusted: list[str] = Field(default_factory=lambda: list(LOOPBACK))
    # calls any one destination is offered at once, across the cluster (busy past it, so
    # the handoff moves on to its next destination or fallback); 0: no limit
    max_calls_per_destination: int = Field(0, ge=0, le=10_000)
    # a new request from anyone else, on a listener naming no ;access=: "trusted" (403),
    # "challenge" (digest, answered with one of the accounts) or "open" (taken)
    access: AccessMode = AccessMode.TRUSTED
    accounts: list[SipAccount] = Field(default_factory=list)
    realm: str = "warmline"

    @field_validator("trusted_identity", "trusted")
    @classmethod
    def _networks(cls, values: list[str]) -> list[str]:
        parse_networks(values, "network")
        return values

    @model_validator(mode="after")
    def _interval(self) -> SipSection:
        if 0 < self.session_expires < self.min_se:
            raise ValueError(f"session_expires: {self.session_expires} is below min_se "
                             f"({self.min_se}); 0 turns session timers off")
        challenging = self.access is AccessMode.CHALLENGE or any(
            parse_listen(value).access is AccessMode.CHALLENGE for value in self.listen)
        if challenging and not self.accounts:
            raise ValueError("accounts: access \"challenge\" needs at least one "
                             "[[sip.accounts]] to check the answers against")
        return self

    def auth_users(self) -> dict[str, str]:
        """username -> password of the accounts (passwords read now; ValueError naming
        the key when one cannot be)."""
        return {account.username: account.password(index)
                for index, account in enumerate(self.accounts)}

    def session_timer(self) -> SessionTimerSettings:
        return SessionTimerSettings(self.session_expires, self.min_se)

    @field_validator("listen")
    @classmethod
    def _listeners(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                parse_listen(value)
            except ListenSpecError as error:
                raise ValueError(str(error)) from None
        return values


class HttpSection(_Strict):
    listen: str = "127.0.0.1:8080"
    api_token_env: str | None = None  # the variable holding the API token
    api_token_file: str | None = None  # or the file holding it

    @model_validator(mode="before")
    @classmethod
    def _token_not_inline(cls, data: Any) -> Any:
        return _no_inline_secret(data, "api_token")

    def api_token(self) -> str | None:
        return read_secret("http.api_token", self.api_token_env, self.api_token_file)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        parse_host_port(value)
        return value


CodecName = Literal["PCMU", "PCMA", "G722", "opus"]
SrtpName = Literal["off", "accept", "require"]


def _all_codecs() -> list[CodecName]:
    return ["PCMU", "PCMA", "G722", "opus"]


class MediaSection(_Strict):
    ports: str = "20000-30000"
    advertise: str | None = None  # the RTP address for SDP when it is not the SIP listener's
    codecs: list[CodecName] = Field(default_factory=_all_codecs, min_length=1)
    hold_audio: str | None = None
    # SDES-SRTP (RFC 4568): "off", "accept" (answer RTP/SAVP, offer RTP) or "require"
    srtp: SrtpName = "accept"
    # a caller sending neither RTP nor RTCP this many seconds is hung up (0: never)
    rtp_timeout: float = Field(60.0, ge=0, le=86400)
    # "embedded": the in-process relay; "rtpengine": rtpengine anchors every leg (needs rtpengine)
    plane: Literal["embedded", "rtpengine"] = "embedded"
    rtpengine: str | None = None  # its ng control address, udp:HOST:PORT
    # let rtpengine bridge a plain caller-human pair itself (the far ends then see the other
    # phone's own SSRC and sequence: see docs/media-planes.md before turning it on)
    rtpengine_bridge: bool = False
    # the embedded relay's compiled forwarder threads, sharing the bridged (and transcoded)
    # pairs; 0: one per CPU warmline may run on
    relay_threads: int = Field(0, ge=0, le=64)

    @field_validator("rtpengine")
    @classmethod
    def _ng_address(cls, value: str | None) -> str | None:
        if value is not None:
            parse_ng_address(value)
        return value

    @model_validator(mode="after")
    def _plane_needs_address(self) -> MediaSection:
        if self.plane == "rtpengine" and self.rtpengine is None:
            raise ValueError('plane = "rtpengine" needs rtpengine = "udp:HOST:PORT" '
                             "(its ng control address)")
        return self

    @field_validator("ports")
    @classmethod
    def _range(cls, value: str) -> str:
        PortRange.parse(value)
        return value

    @field_validator("hold_audio")
    @classmethod
    def _readable(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                load_wav(Path(value), 8000)
            except AudioFileError as error:
                raise ValueError(str(error)) from None
        return value


class ComplexityRuleModel(_Strict):
    intent: str
    reason: str
    slot: str | None = None
    op: Literal[">", ">=", "<", "<=", "==", "!="] = ">"
    value: float | str | None = None
    needs: str | None = None


class TriggersSection(_Strict):
    confidence_threshold: float = Field(0.60, ge=0, le=1)
    confidence_turns: int = Field(2, ge=1, le=20)
    explicit_request: bool = True
    frustration_threshold: float = Field(0.60, gt=0, le=1)
    frustration_reset: float = Field(0.35, ge=0, lt=1)
    smoothing: float = Field(0.4, gt=0, le=1)
    complexity: list[ComplexityRuleModel] = Field(default_factory=list)
    per_intent: dict[str, dict[str, float]] = Field(default_factory=dict)
    per_call_type: dict[str, dict[str, float]] = Field(default_factory=dict)

    def build(self) -> TriggerConfig:
        return TriggerConfig(
            self.confidence_threshold, self.confidence_turns, self.explicit_request,
            self.frustration_threshold, self.frustration_reset, self.smoothing,
            tuple(ComplexityRule(r.intent, r.reason, r.slot, r.op, r.value, r.needs)
                  for r in self.complexity), self.per_intent, self.per_call_type)


class ContextSection(_Strict):
    max_header: int = Field(1024, ge=128, le=8192)
    uui_bytes: int = Field(128, ge=16, le=1024)
    max_total: int = Field(2048, ge=256, le=16384)
    webhook: str | None = Field(None, pattern=r"^https?://")
    webhook_secret_env: str | None = None  # the HMAC key for X-Warmline-Signature
    webhook_secret_file: str | None = None
    webhook_timeout: float = Field(2.0, gt=0, le=30)

    @model_validator(mode="before")
    @classmethod
    def _secret_not_inline(cls, data: Any) -> Any:
        return _no_inline_secret(data, "webhook_secret")

    def webhook_secret(self) -> str:
        return read_secret("context.webhook_secret", self.webhook_secret_env,
                           self.webhook_secret_file) or ""


class DestinationModel(_Strict):
    uri: str
    mode: TransferMode | None = None  # warm, or agent for ws://, wss:// and agent:NAME
    timeout: float = Field(30, gt=0, le=600)
    accept: Acceptance = Acceptance.NONE
    connect: ConnectBy = ConnectBy.BRIDGE
    probe: bool = False
    # rung at the same time as uri (simultaneous ring: "on-call staff, 120 s"); the first
    # to answer takes the call
    ring_with: list[str] = Field(default_factory=list)
    # calls this destination (each of its phones) is offered at once, across the cluster;
    # 0: [transfer] max_calls_per_destination
    max_calls: int = Field(0, ge=0, le=10_000)

    def build(self) -> Destination:
        mode = self.mode or (TransferMode.AGENT if is_agent_uri(self.uri)
                             else TransferMode.WARM)
        return Destination(self.uri, mode, self.timeout, accept=self.accept,
                           connect=self.connect, probe=self.probe,
                           ring_with=tuple(self.ring_with))


_SPAN = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-4]):([0-5]\d)$")


class HoursModel(_Strict):
    zone: str
    mon: list[str] = Field(default_factory=list)
    tue: list[str] = Field(default_factory=list)
    wed: list[str] = Field(default_factory=list)
    thu: list[str] = Field(default_factory=list)
    fri: list[str] = Field(default_factory=list)
    sat: list[str] = Field(default_factory=list)
    sun: list[str] = Field(default_factory=list)
    holidays: list[date] = Field(default_factory=list)

    @field_validator("mon", "tue", "wed", "thu", "fri", "sat", "sun")
    @classmethod
    def _spans(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _SPAN.match(value):
                raise ValueError(f"{value!r} is not HH:MM-HH:MM")
        return values

    def build(self) -> Hours:
        weekly = {day: tuple(_span(text) for text in getattr(self, day))
                  for day in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
        return Hours(self.zone, {day: spans for day, spans in weekly.items() if spans},
                     frozenset(self.holidays))


def _span(text: str) -> tuple[time, time]:
    start, end = text.split("-")
    close = time(23, 59, 59) if end == "24:00" else time.fromisoformat(end)
    return time.fromisoformat(start), close


class DepartmentModel(_Strict):
    name: str
    destinations: list[DestinationModel] = Field(min_length=1)
    intents: list[str] = Field(default_factory=list)
    skills: list[str] = Field(default_factory=list)
    hours: HoursModel | None = None
    after_hours: FallbackKind = FallbackKind.VOICEMAIL
    callback_window_minutes: int = Field(120, ge=0, le=7 * 24 * 60)


class RoutingSection(_Strict):
    default: str


class StorageSection(_Strict):
    records: str = "warmline-records"
    database: str | None = Field(None, pattern=r"^(sqlite|postgresql(\+psycopg)?)://")


class AgentSection(_Strict):
    ws: str | None = Field(None, pattern=r"^wss?://",
                           description="the bot's WebSocket (Twilio Media Streams framing)")
    flow: str | None = Field(None, description="a scripted flow (TOML) answering the calls")
    early_media: float = Field(6.0, ge=0, le=60, description=(
        "seconds a call may ring with early media (183 + ringback) while the bot connects; "
        "answered as soon as it is there; 0 answers at once"))


class AgentTargetSection(_Strict):
    """``[agents.NAME]``: another AI agent a call may be handed to as agent:NAME."""

    url: str = Field(pattern=r"^wss?://", max_length=2048,
                     description="the agent's WebSocket (Twilio Media Streams framing)")
    connect_timeout: float = Field(5.0, gt=0, le=60,
                                   description="seconds to open it before the handoff fails")

    def build(self, name: str) -> AgentSpec:
        """ValueError naming ``agents.NAME`` for a bad name or URL."""
        problem = agent_uri_problem(f"agent:{name}") or agent_uri_problem(self.url)
        if problem is not None:
            raise ValueError(f"agents.{name}: {problem}")
        return AgentSpec(self.url, self.connect_timeout)


class DnsSection(_Strict):
    """Where RFC 3263 lookups go; none: /etc/resolv.conf (and /etc/hosts)."""

    servers: list[str] = Field(default_factory=list)  # "HOST:PORT" or "HOST" (port 53)
    timeout: float = Field(2.0, gt=0, le=30)

    @field_validator("servers")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        for value in values:
            _nameserver(value)
        return values

    def nameservers(self) -> list[tuple[str, int]]:
        return [_nameserver(value) for value in self.servers]


def _nameserver(text: str) -> tuple[str, int]:
    """HOST[:PORT] of a DNS server (an IP address; IPv6 in brackets with a port)."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif text.count(":") == 1:
        host, port = text.split(":")
    else:
        host, port = text, "53"  # IPv4 without a port, or a bare IPv6 address
    if not is_ip_address(host):
        raise ValueError(f"{text!r}: a DNS server is an IP address[:port]")
    if not is_digits(port) or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: port must be 1-65535")
    return host, int(port)


class TrunkSection(_Strict):
    """A carrier or PBX: where calls go, the account it challenges, whether to register.

    The password never sits in this file or on the command line: it is read from
    an environment variable or a file (a secret mounted by the platform).
    """

    uri: str  # sip:pbx.example.com[:port][;transport=tcp]: the domain and registrar
    username: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    realm: str | None = None  # answer only this realm's challenges (None: any)
    registers: bool = Field(False, alias="register")  # ("register" is a BaseModel method)
    expires: int = Field(600, ge=60, le=86400)
    outbound_proxy: str | None = None
    caller_id: str | None = None  # From of calls through this trunk
    destinations: list[str] = Field(default_factory=list)  # globs; empty: the uri's domain
    srtp: SrtpName | None = None  # the legs we place through it; None: [media] srtp
    max_calls: int = Field(0, ge=0, le=100_000)  # legs we dial through it at once; 0: any

    @field_validator("uri", "outbound_proxy")
    @classmethod
    def _sip(cls, value: str | None) -> str | None:
        if value is not None and not isinstance(_parsed(value), SipUri):
            raise ValueError(f"{value!r} is not a sip: or sips: URI")
        return value

    @model_validator(mode="after")
    def _account(self) -> TrunkSection:
        if self.password_env and self.password_file:
            raise ValueError("give password_env or password_file, not both")
        if (self.password_env or self.password_file) and not self.username:
            raise ValueError("username: needed with a password")
        if self.registers and not self.username:
            raise ValueError("username: needed to register")
        return self

    def build(self, name: str) -> Trunk:
        """The trunk, its password read now (ValueError naming the key when it cannot be)."""
        uri = _parsed(self.uri)
        proxy = _parsed(self.outbound_proxy) if self.outbound_proxy else None
        assert isinstance(uri, SipUri) and (proxy is None or isinstance(proxy, SipUri))
        credentials = None
        if self.username:
            credentials = Credentials(self.username, self._password(name), self.realm)
        return Trunk(name, uri, credentials, self.registers, self.expires, proxy,
                     self.caller_id, tuple(self.destinations),
                     SrtpPolicy(self.srtp) if self.srtp else None)

    def _password(self, name: str) -> str:
        return read_secret(f"trunks.{name}.password", self.password_env,
                           self.password_file) or ""


def _parsed(text: str) -> object:
    try:
        return parse_uri(text)
    except SipParseError:
        return None


class EventsSection(_Strict):
    """Status callbacks (brain/status_events.py): every call and handoff step, signed."""

    url: str | None = Field(None, pattern=r"^https?://")  # None: nothing is pushed
    secret_env: str | None = None  # the signing key (whsec_... or any text)
    secret_file: str | None = None
    kinds: list[str] | None = None  # record kinds pushed; None: the defaults
    attempts: int = Field(6, ge=1, le=20)  # per event, with back-off from 1 s doubling
    # hosts (globs) a per-call URL (POST /calls callback_url, POST /calls/{id}/events) may
    # name; empty: none is accepted (the API must not make warmline call arbitrary hosts)
    call_url_hosts: list[str] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _secret_not_inline(cls, data: Any) -> Any:
        return _no_inline_secret(data, "secret")

    @field_validator("call_url_hosts")
    @classmethod
    def _hosts(cls, values: list[str]) -> list[str]:
        for value in values:
            if not value or any(ch in value for ch in "/:@ ") or value.strip("*.") == "":
                raise ValueError(f"{value!r} is not a host name (globs allowed: "
                                 "*.example.com)")
        return values

    @field_validator("url")
    @classmethod
    def _reachable_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            try:
                port_ok = parts.port is None or 0 < parts.port < 65536
            except ValueError:
                port_ok = False
            if not parts.hostname or not port_ok:
                raise ValueError(f"{value!r} is not an http(s) URL with a host and a valid port")
        return value

    @model_validator(mode="after")
    def _signed(self) -> EventsSection:
        if self.call_url_hosts and not (self.secret_env or self.secret_file):
            raise ValueError("secret_env: call_url_hosts needs a signing secret (secret_env "
                             "or secret_file), so receivers can verify what they get")
        if self.url and not (self.secret_env or self.secret_file):
            raise ValueError("secret_env: a url needs a signing secret (secret_env or "
                             "secret_file), so receivers can verify what they get")
        return self

    def secret(self) -> str:
        """The signing secret, checked usable now (ValueError naming the key)."""
        value = read_secret("events.secret", self.secret_env, self.secret_file)
        if (self.url or self.call_url_hosts) and not value:
            raise ValueError("events.secret: empty")
        if value:
            try:
                StatusCallbackSettings(self.url or "http://x", value).signer_check()
            except Exception as error:  # the library's own error for a malformed key
                raise ValueError(f"events.secret: not usable for signing ({error})") from None
        return value or ""


class TraceSection(_Strict):
    """A copy of every SIP message to a Homer or sngrep collector (transport/hep.py), and
    how long the SIP traces of ended calls are kept."""

    hep: str | None = Field(None, pattern=r"^udp:")  # "udp:HOST:PORT"; None: no copy sent
    hep_capture_id: int = Field(2001, ge=0, le=2**32 - 1)  # names this node in Homer
    hep_password_env: str | None = None  # Homer's optional auth key
    hep_password_file: str | None = None
    # ended calls' SIP traces (traces.sqlite in the records folder) are deleted after this
    # many days; 0 keeps them
    keep_days: float = Field(14.0, ge=0, le=36500)

    @model_validator(mode="before")
    @classmethod
    def _secret_not_inline(cls, data: Any) -> Any:
        return _no_inline_secret(data, "hep_password")

    @field_validator("hep")
    @classmethod
    def _collector(cls, value: str | None) -> str | None:
        if value is not None:
            _collector_address(value)
        return value

    def collector(self) -> tuple[str, int] | None:
        return None if self.hep is None else _collector_address(self.hep)

    def password(self) -> str | None:
        return read_secret("trace.hep_password", self.hep_password_env, self.hep_password_file)


def _collector_address(value: str) -> tuple[str, int]:
    """``udp:HOST:PORT`` (an IPv6 host in brackets) as (host, port); ValueError otherwise."""
    host, _, port = value.removeprefix("udp:").rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not udp:HOST:PORT")
    return host, int(port)
class RecordingSection(_Strict):
    """[recording]: calls recorded with the caller's consent (calls/recording.py)."""

    mode: RecordingMode = RecordingMode.OFF  # "off" (only when the API asks), "call", "handoff"
    consent: str = Field(DEFAULT_CONSENT, max_length=1000)  # spoken first; "": nothing said
    directory: str | None = None  # None: <records>/recordings
    retention_days: float = Field(0.0, ge=0, le=36500)  # older files are deleted; 0 keeps

    @field_validator("directory")
    @classmethod
    def _directory(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("empty: leave it out for <records>/recordings")
        return value

    def build(self) -> RecordingSettings:
        return RecordingSettings(self.mode, self.consent.strip(),
                                 Path(self.directory) if self.directory else None,
                                 self.retention_days)


class _DestinationRules(_Strict):
    """Where warmline may call: ``allow`` patterns (sip:USER@HOST[:PORT], sips:...,
    tel:NUMBER, each part a glob) and ``trusted`` networks reached directly (not
    through a trunk) without a pattern. [transfer] and [outbound] differ only in
    their defaults."""

    allow: list[str] = Field(default_factory=list)
    trusted: list[str] = Field(default_factory=list)

    @field_validator("trusted")
    @classmethod
    def _trusted_networks(cls, values: list[str]) -> list[str]:
        parse_networks(values, "trusted")
        return values

    @field_validator("allow")
    @classmethod
    def _patterns(cls, values: list[str]) -> list[str]:
        for value in values:
            try:
                DestinationPattern.parse(value)
            except PolicyError as error:
                raise ValueError(str(error).removeprefix("transfer.allow: ")) from None
        return values


class TransferSection(_DestinationRules):
    """Where a transfer asked for over the API may go: the patterns, and this machine."""

    trusted: list[str] = Field(default_factory=lambda: list(LOOPBACK))
    # calls any one destination is offered at once, across the cluster (busy past it, so
    # the handoff moves on to its next destination or fallback); 0: no limit
    max_calls_per_destination: int = Field(0, ge=0, le=10_000)


class OutboundSection(_DestinationRules):
    """Whom warmline may call (POST /calls, callbacks) and as whom: nothing by default."""

    caller_id: str = Field("", max_length=2048)  # our From; "" the trunk's caller ID
    caller_ids: list[str] = Field(default_factory=list)  # others a request may ask for
    ring_timeout: float = Field(30.0, gt=0, le=300)

    @field_validator("caller_id")
    @classmethod
    def _caller_id(cls, value: str) -> str:
        if value and not isinstance(_parsed(value), SipUri | TelUri):
            raise ValueError(f"{value!r} is not a sip:, sips: or tel: URI")
        return value

    def policy(self) -> OutboundPolicy:
        return OutboundPolicy(DestinationPolicy.build(self.allow, self.trusted, "outbound"),
                              self.caller_id, tuple(self.caller_ids), self.ring_timeout)


class CallbacksSection(_Strict):
    """The callback dialler: promised callbacks are dialled at their time when ``dial``."""

    dial: bool = False  # off: promises are kept (GET /callbacks) and never dialled
    attempts: int = Field(3, ge=1, le=20)
    retry_interval_s: float = Field(300.0, gt=0, le=7 * 86400)
    max_concurrent: int = Field(2, ge=1, le=1000)
    hours: str | None = Field(None, pattern=r"^\d\d:\d\d-\d\d:\d\d$")  # when calls may start
    zone: str = "UTC"  # of ``hours``
    max_late_s: float = Field(86_400.0, gt=0)  # a promise this overdue is not dialled
    name: str = Field("the support team", max_length=100)  # "this is NAME calling you back"
    ring_timeout: float = Field(30.0, gt=0, le=300)

    def settings(self) -> CallbackSettings | None:
        """None when off; ValueError naming the key for hours or a zone that cannot work."""
        if not self.dial:
            return None
        window = _span(self.hours) if self.hours else None
        try:
            policy = CallbackPolicy(self.attempts, self.retry_interval_s, self.max_concurrent,
                                    window, self.zone, self.max_late_s)
        except (KeyError, ValueError) as error:
            if isinstance(error, ValueError) and str(error).startswith("callbacks."):
                raise
            raise ValueError(f"callbacks.zone: {self.zone!r} is not an IANA time zone") \
                from None
        return CallbackSettings(policy, self.name, self.ring_timeout)


class LimitsSection(_Strict):
    """What one source, or everyone, may take of the engine: past each, a refusal
    (a SIP 503 with Retry-After, an HTTP 413/503, a closed connection), never a hang."""

    sip_rate: float = Field(50.0, ge=0)  # messages a second from one untrusted source; 0 off
    sip_burst: float = Field(100.0, ge=0)  # ... in bursts up to this many
    # SIP server transactions held, live ones counting one and answered ones (lingering
    # 32 s as a key and bytes to absorb retransmissions, two a call) a third: the default
    # sustains ~9,000 new calls/s and bounds their memory near 400 MB; past it new
    # requests get 503; 0: no cap
    max_transactions: int = Field(200_000, ge=0)
    max_calls: int = Field(1_000, ge=0)  # calls at once; past it new ones get 503; 0: no cap
    # seconds SIP input may wait in a UDP listener's queue (two probes in a row) before new
    # calls get 503, until it is back under half; 0: never (transport/backlog.py)
    max_queue_delay: float = Field(0.3, ge=0, le=10)
    retry_after: int = Field(5, ge=1, le=3600)  # seconds, in each 503
    tcp_idle_timeout: float = Field(300.0, ge=0)  # an inbound connection no call uses
    tcp_message_deadline: float = Field(10.0, ge=0)  # to finish a message once begun
    tcp_per_source: int = Field(64, ge=0)  # inbound TCP/TLS connections from one address
    tcp_total: int = Field(10_000, ge=0)  # inbound TCP/TLS connections in all
    http_body: int = Field(1_048_576, ge=1024, le=64 * 1_048_576)  # bytes per request body
    ws_message: int = Field(65_536, ge=1024, le=16 * 1_048_576)  # bytes per WebSocket message
    ws_audio_seconds: float = Field(120.0, gt=0, le=3600)  # a bot's audio queued ahead of playing
    # seconds an ended call stays in memory (GET /calls lists it); then it is read from the
    # records: memory stays flat however many calls the last hour carried
    keep_ended_calls: float = Field(120.0, ge=5, le=86_400)


class ClusterSection(_Strict):
    """This node in a cluster (docs/deploy.md): Kamailio in front, the workers on this host,
    and the state shared through Redis; without ``redis``, one node alone."""

    # full nodes on this host (one per core): SIP port base, base+1, ...; HTTP port
    # likewise; the media ports split in N slices (workers.py); 1: this process only
    workers: int = Field(1, ge=1, le=256)
    exit_when_drained: bool = False  # exit once a drain (SIGUSR1, POST /admin/drain) ends
    node_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")  # None: host-pid
    redis: str | None = None  # redis://host:6379/0, rediss://..., unix:///path
    api_url: str | None = None  # how the other nodes reach this node's API
    prefix: str = Field(DEFAULT_PREFIX, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    heartbeat: float = Field(2.0, ge=0.2, le=60)
    handoff_ttl: float = Field(86_400.0, ge=60, le=30 * 86_400)
    password_env: str | None = None  # Redis's password (AUTH), never in this file
    password_file: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _password_not_inline(cls, data: Any) -> Any:
        return _no_inline_secret(data, "password")

    @field_validator("redis")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        parts = urlsplit(value)
        if parts.scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"{value!r}: a redis://, rediss:// or unix:// URL")
        if parts.password:
            raise ValueError("the URL carries a password: secrets are not read from the "
                             "config file; give password_env or password_file")
        return value

    def password(self) -> str | None:
        return read_secret("cluster.password", self.password_env, self.password_file)

    @model_validator(mode="after")
    def _one_node_per_worker(self) -> ClusterSection:
        """Each worker is a node of its own: one name or one API address for them all would
        have the registry send one worker's requests to another."""
        if self.workers > 1 and self.redis is not None:
            for key in ("node_id", "api_url"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key}: with workers > 1 leave it unset: each worker "
                                     "takes its own (hostname-pid, its own HTTP address)")
        return self

    @field_validator("api_url")
    @classmethod
    def _api_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{value!r}: an http:// or https:// URL with a host")
        return value

    def settings(self, own_api: str | None) -> ClusterSettings | None:
        """None without ``redis``: one node, nothing shared."""
        if self.redis is None:
            return None
        return ClusterSettings(self.node_id or default_node_id(), self.redis,
                               self.api_url or own_api, self.prefix, self.heartbeat,
                               self.handoff_ttl, self.password())


class WarmlineConfig(_Strict):
    sip: SipSection = Field(default_factory=SipSection)
    cluster: ClusterSection = Field(default_factory=ClusterSection)
    limits: LimitsSection = Field(default_factory=LimitsSection)
    transfer: TransferSection = Field(default_factory=TransferSection)
    events: EventsSection = Field(default_factory=EventsSection)
    outbound: OutboundSection = Field(default_factory=OutboundSection)
    callbacks: CallbacksSection = Field(default_factory=CallbacksSection)
    trace: TraceSection = Field(default_factory=TraceSection)
    recording: RecordingSection = Field(default_factory=RecordingSection)
    http: HttpSection | None = None
    media: MediaSection = Field(default_factory=MediaSection)
    storage: StorageSection = Field(default_factory=StorageSection)
    triggers: TriggersSection = Field(default_factory=TriggersSection)
    context: ContextSection = Field(default_factory=ContextSection)
    departments: list[DepartmentModel] = Field(default_factory=list)
    routing: RoutingSection | None = None
    agent: AgentSection | None = None
    dns: DnsSection = Field(default_factory=DnsSection)
    trunks: dict[str, TrunkSection] = Field(default_factory=dict)
    agents: dict[str, AgentTargetSection] = Field(default_factory=dict)

    def limit_table(self) -> LimitTable:
        """Calls at once per destination ([transfer] default, each department destination's
        max_calls for its phones) and per trunk."""
        destinations = {destination_key(uri): destination.max_calls
                        for department in self.departments
                        for destination in department.destinations if destination.max_calls
                        for uri in (destination.uri, *destination.ring_with)}
        trunks = {name: trunk.max_calls for name, trunk in self.trunks.items()
                  if trunk.max_calls}
        return LimitTable(self.transfer.max_calls_per_destination, destinations, trunks)

    def build_agents(self) -> dict[str, AgentSpec]:
        """The agents calls may be handed to by name; ValueError naming the key for a bad
        one, or for a department destination naming an agent that is not there."""
        agents = {name: section.build(name) for name, section in self.agents.items()}
        for department in self.departments:
            for destination in department.destinations:
                name = destination.uri.partition(":")[2]
                if destination.uri.lower().startswith("agent:") and name not in agents:
                    raise ValueError(f"departments.destinations.uri: {destination.uri!r} "
                                     f"names no [agents.{name}]")
        return agents

    def destination_policy(self) -> DestinationPolicy:
        return DestinationPolicy.build(self.transfer.allow, self.transfer.trusted)

    def build_trunks(self) -> Trunks:
        """The trunks in file order, passwords read (ValueError naming the key)."""
        return Trunks(tuple(section.build(name) for name, section in self.trunks.items()))

    def escalation(self, public_url: str | None) -> EscalationPolicy:
        """The policy for the engine (the router is built here; its errors are RoutingError)."""
        policy = EscalationPolicy(
            triggers=self.triggers.build(),
            budget=HeaderBudget(self.context.max_header, self.context.uui_bytes,
                                self.context.max_total),
            webhook_url=self.context.webhook, webhook_secret=self.context.webhook_secret(),
            webhook_timeout=self.context.webhook_timeout, public_url=public_url)
        if self.departments:
            from datetime import timedelta

            departments = [Department(
                d.name, tuple(x.build() for x in d.destinations), frozenset(d.intents),
                frozenset(d.skills), d.hours.build() if d.hours else None, d.after_hours,
                timedelta(minutes=d.callback_window_minutes)) for d in self.departments]
            default = self.routing.default if self.routing else departments[0].name
            policy.router = Router(departments, default)
        return policy


def load(path: Path) -> WarmlineConfig:
    """The validated config; ConfigError listing every problem with its line."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror}"]) from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError([f"{path}: not valid TOML: {error}"]) from None
    try:
        config = WarmlineConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError([_describe(path, text, raw, item["loc"], item["msg"])
                           for item in error.errors()]) from None
    try:
        config.escalation(None)
        config.build_trunks()
        config.build_agents()
        config.sip.auth_users()
        config.events.secret()
        config.callbacks.settings()
        config.trace.password()
        config.cluster.password()
        if config.http is not None:
            config.http.api_token()
    except (RoutingError, HandoffError, ValueError) as error:
        key = str(error).split(":", 1)[0]
        raise ConfigError([f"{path}:{_line_of(text, key.split('.'))}: {error}"]) from None
    return config


def _describe(path: Path, text: str, raw: dict[str, Any], loc: tuple[Any, ...],
              message: str) -> str:
    key = ".".join(str(part) for part in loc if not str(part).startswith(("function-",
                                                                           "literal[")))
    return f"{path}:{_line_of(text, [str(part) for part in loc])}: {key}: {message}"


def _line_of(text: str, parts: list[str]) -> int:
    """The line where the innermost named key of ``parts`` is set (best effort, 1-based)."""
    lines = text.splitlines()
    names = [part for part in parts if not part.isdigit() and "[" not in part]
    for name in reversed(names):
        pattern = re.compile(rf"^\s*\[*\s*(?:[\w.]+\.)?{re.escape(name)}\s*(?:=|\]|\.)")
        for number, line in enumerate(lines, start=1):
            if pattern.match(line):
                return number
    return 1
