"""What `warmline serve` runs with: one frozen value whose defaults are stated once.

The command line fills it in from flags and warmline.toml, tests and
benchmarks build it directly, and `server.serve()` reads nothing else. A new
option is one field here instead of another parameter threaded through the
CLI, serve() and the engine builder.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

from warmline.agents.handoff import AgentSpec
from warmline.agents.scripted import Flow
from warmline.brain.escalation import EscalationPolicy
from warmline.brain.status_events import CallUrlSettings, StatusCallbackSettings
from warmline.calls.recording import RecordingSettings
from warmline.calls.trunks import Trunks
from warmline.cluster.limits import LimitTable
from warmline.cluster.settings import ClusterSettings
from warmline.media.relay import PortRange
from warmline.media.rtpengine import PlaneKind
from warmline.media.sdes import SrtpPolicy
from warmline.records.store import default_url
from warmline.sip.access import LOOPBACK, AccessMode, RateLimit
from warmline.sip.useragent import UserAgentConfig
from warmline.transfer.callback_dialler import CallbackSettings
from warmline.transfer.outbound import OutboundPolicy
from warmline.transfer.policy import DestinationPolicy
from warmline.transport.listen import ListenSpec
from warmline.transport.resolver import Resolver
from warmline.transport.stream import StreamLimits


def secure_user_agent() -> UserAgentConfig:
    """The SIP core as `serve` runs it unless told otherwise: calls taken from loopback
    only (others get 403 until [sip] trusted or a challenge lets them in), 50 messages a
    second per untrusted source, at most 200,000 server transactions (then 503), new calls
    capped while SIP input waits 0.3 s unread (sip/admission.py)."""
    return UserAgentConfig(trusted_networks=list(LOOPBACK), access=AccessMode.TRUSTED,
                           source_limit=RateLimit(50.0, 100.0), max_transactions=200_000,
                           max_queue_delay=0.3)


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for tls: listeners (cert, key) and for verifying the peers we dial (ca)."""

    cert: str | None = None
    key: str | None = None
    ca: str | None = None

    def server_context(self) -> ssl.SSLContext | None:
        """None without a certificate; the command line then refuses tls: listeners."""
        if not self.cert:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca)
        return context


@dataclass(frozen=True)
class HttpSpec:
    """Where the control API listens."""

    host: str
    port: int

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


@dataclass(frozen=True)
class HepSettings:
    """Where the HEP v3 copy of every SIP message goes ([trace] in warmline.toml)."""

    collector: tuple[str, int]
    capture_id: int = 2001
    password: str | None = None


@dataclass(frozen=True)
class ServeSettings:
    """Everything serve() needs; ``http=None`` runs the SIP-only answerer (no media, no API).

    The fields after ``http`` only matter with an HTTP API: the SIP-only
    answerer is what the SIP benchmarks measure and ignores them.
    """

    listen: tuple[ListenSpec, ...] = (ListenSpec("udp", "127.0.0.1", 5070),)
    tls: TlsFiles = TlsFiles()
    http: HttpSpec | None = None
    # [start, end) for RTP/RTCP. A range, not a PortRange: that one hands ports out, so
    # each run builds its own (port_range()) and a settings value stays a value.
    media_ports: range = range(20000, 30000)
    codecs: tuple[str, ...] = ("PCMU", "PCMA", "G722", "opus")  # offered in this order
    srtp: SrtpPolicy = SrtpPolicy.ACCEPT  # SDES-SRTP: answered when offered, not offered
    media_advertise: str | None = None  # the RTP address put in SDP; None: see media_address
    media_plane: PlaneKind = PlaneKind.EMBEDDED  # [media] plane
    rtpengine: tuple[str, int] | None = None  # [media] rtpengine: its ng control address
    rtpengine_bridge: bool = False  # [media] rtpengine_bridge: rtpengine bridges plain pairs
    relay_threads: int = 0  # [media] relay_threads: compiled forwarder threads; 0: one per CPU
    hold_audio: Path | None = None  # a WAV played while nobody talks; None: ringback
    escalation: EscalationPolicy = field(default_factory=EscalationPolicy)
    records: Path = Path("warmline-records")  # voicemail, callbacks, the trigger log
    database: str | None = None  # None: SQLite in ``records`` (see database_url)
    api_token: str | None = None  # None: the HTTP API asks for no bearer token
    agent_ws: str | None = None  # the bot's WebSocket; it takes each call first
    early_media: float = 6.0  # with agent_ws: seconds of ringback (183) while it connects; 0 off
    flow: Flow | None = None  # a scripted flow for the calls when there is no bot
    agents: dict[str, AgentSpec] = field(default_factory=dict)  # [agents.NAME]: agent:NAME
    user_agent: UserAgentConfig = field(default_factory=secure_user_agent)
    # TCP/TLS: idle timeout, message deadline, per-source and total caps
    stream_limits: StreamLimits = field(default_factory=StreamLimits)
    rtp_timeout: float = 60.0  # a caller sending neither RTP nor RTCP this long is hung up; 0 off
    max_calls: int = 1_000  # calls at once; past it a new one gets 503 + Retry-After; 0: any
    http_body: int = 1_048_576  # bytes per HTTP request body (413 past it)
    ws_message: int = 65_536  # bytes per WebSocket message from a bot (closed 1009 past it)
    # where a transfer asked for over the API may go (default: loopback addresses only)
    destination_policy: DestinationPolicy = field(default_factory=DestinationPolicy)
    events: StatusCallbackSettings | None = None  # signed status callbacks; None: off
    ws_audio_seconds: float = 120.0  # a bot's audio queued ahead of playing; past it: dropped
    trunks: Trunks = field(default_factory=Trunks)  # carriers and PBXs (accounts, registration)
    dns_servers: tuple[tuple[str, int], ...] = ()  # none: /etc/resolv.conf and /etc/hosts
    dns_timeout: float = 2.0  # seconds per DNS question
    trusted_identity: tuple[str, ...] = ()  # networks whose P-Asserted-Identity is believed
    hep: HepSettings | None = None  # a HEP v3 copy of every SIP message; None: none
    trace_keep_days: float = 14.0  # [trace] keep_days: ended calls' SIP traces; 0 keeps
    outbound: OutboundPolicy = field(default_factory=OutboundPolicy)  # whom POST /calls rings
    callbacks: CallbackSettings | None = None  # dial the callbacks promised; None: never
    call_urls: CallUrlSettings | None = None  # per-call status URLs; None: refused
    keep_ended_calls: float = 120.0  # seconds GET /calls lists an ended call; then: records
    recording: RecordingSettings = field(default_factory=RecordingSettings)  # [recording]
    exit_when_drained: bool = False  # after a drain (SIGUSR1, POST /admin/drain): exit
    workers: int = 1  # [cluster] workers: full nodes on this host (workers.py), 1: just this
    cluster: ClusterSettings | None = None  # [cluster] with redis; None: this node alone
    limit_table: LimitTable = field(default_factory=LimitTable)  # calls at once per destination

    @property
    def media_host(self) -> str:
        """The address RTP sockets bind: the first listener's."""
        return self.listen[0].host

    @property
    def media_address(self) -> str:
        """The address SDP offers for RTP (c=): ``media_advertise``, else what the first
        listener advertises, else its own address (behind NAT peers must send here)."""
        if self.media_advertise:
            return self.media_advertise
        if self.media_plane is PlaneKind.RTPENGINE and self.rtpengine is not None:
            return self.rtpengine[0]  # rtpengine's interface, assumed its ng address's
        return self.listen[0].public[0]

    @property
    def database_url(self) -> str:
        return self.database or default_url(self.records)

    def resolver(self) -> Resolver:
        """A fresh RFC 3263 resolver for one run (its cache lives as long as the run)."""
        return Resolver(self.dns_servers, timeout=self.dns_timeout)

    def port_range(self) -> PortRange:
        """A fresh allocator over ``media_ports`` for one run."""
        return PortRange(self.media_ports.start, self.media_ports.stop)
