"""The `warmline` command."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import secrets
import sys
import time
from dataclasses import replace
from pathlib import Path

from warmline import __version__
from warmline.agents.scripted import FlowError, load_flow
from warmline.brain.calibration import LOG_NAME, format_report, report
from warmline.brain.escalation import EscalationPolicy
from warmline.brain.redact import redact
from warmline.brain.status_events import DEFAULT_KINDS, CallUrlSettings, StatusCallbackSettings
from warmline.config import ConfigError, WarmlineConfig
from warmline.config import load as load_config
from warmline.logs import configure as configure_logs
from warmline.media.fastpath import describe_forwarder
from warmline.media.relay import PortRange
from warmline.media.rtpengine import PlaneKind, parse_ng_address
from warmline.media.sdes import SrtpPolicy
from warmline.probe import DEFAULT_TIMEOUT, ProbeReport, ProbeSettings, render, run_probe
from warmline.records.report import kpi_report
from warmline.records.store import default_url
from warmline.records.trace import TracedMessage, ladder, pcap
from warmline.records.trace_store import find_trace
from warmline.server import serve
from warmline.settings import HepSettings, HttpSpec, ServeSettings, TlsFiles
from warmline.sip.access import AccessMode, RateLimit
from warmline.sip.compiled import describe
from warmline.sip.useragent import UserAgentConfig
from warmline.transfer.handoff import Destination, HandoffError
from warmline.transport.listen import ListenSpec, ListenSpecError, parse_host_port, parse_listen
from warmline.transport.stream import StreamLimits
from warmline.workers import dispatcher_list, plan_workers, run_workers

LOG_LEVELS = ["debug", "info", "warning", "error"]
API_TOKEN_ENV = "WARMLINE_API_TOKEN"
WEBHOOK_SECRET_ENV = "WARMLINE_WEBHOOK_SECRET"


def build_parser() -> argparse.ArgumentParser:
    defaults = ServeSettings()  # what `serve` runs with when neither a flag nor the config says
    parser = argparse.ArgumentParser(
        prog="warmline",
        description="Hand live calls from an AI voice agent to a human over SIP.")
    parser.add_argument("--version", action="version",
                        version=f"warmline {__version__} ({describe()}; "
                                f"{describe_forwarder()})")
    parser.add_argument("--log-level", default="info", choices=LOG_LEVELS)
    parser.add_argument("--log-format", default="text", choices=["text", "json"],
                        help="json: one JSON object per line, with call_id/handoff_id")
    # Accepted after the sub-command too (`warmline serve --log-level debug`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", default=argparse.SUPPRESS, choices=LOG_LEVELS)
    common.add_argument("--log-format", default=argparse.SUPPRESS, choices=["text", "json"])
    commands = parser.add_subparsers(dest="command", required=True)
    serve_cmd = commands.add_parser(
        "serve", parents=[common],
        help="run the engine; with no config every call is answered by the SIP-only answerer")
    serve_cmd.add_argument(
        "--sip", action="append", metavar="TRANSPORT:HOST:PORT",
        help="listen on udp:, tcp: or tls: HOST:PORT (repeatable; default "
             f"{' '.join(str(spec) for spec in defaults.listen)})")
    serve_cmd.add_argument("--tls-cert", help="PEM certificate chain for tls: listeners")
    serve_cmd.add_argument("--tls-key", help="PEM private key for --tls-cert")
    serve_cmd.add_argument("--tls-ca", help="CA bundle to verify TLS peers we connect to")
    serve_cmd.add_argument(
        "--http", metavar="HOST:PORT",
        help="serve the control API (calls, transfers, handoffs) and answer calls with media")
    serve_cmd.add_argument("--media-ports", metavar="START-END", default=None,
                           help="UDP ports for RTP/RTCP (default "
                                f"{defaults.media_ports.start}-{defaults.media_ports.stop})")
    serve_cmd.add_argument("--escalate-to", metavar="URI",
                           help="with --http: where a firing trigger sends the caller")
    serve_cmd.add_argument("--escalate-mode", default="warm",
                           choices=["blind", "bridge", "warm", "attended"])
    serve_cmd.add_argument("--webhook", metavar="URL",
                           help="POST the signed context packet here before the human rings")
    serve_cmd.add_argument("--webhook-secret-file", metavar="FILE", default=None,
                           help="the HMAC-SHA256 key for X-Warmline-Signature, read from FILE "
                                f"(or ${WEBHOOK_SECRET_ENV})")
    serve_cmd.add_argument("--api-token-file", metavar="FILE", default=None,
                           help="require 'Authorization: Bearer TOKEN' on the HTTP API, the "
                                f"token read from FILE (or ${API_TOKEN_ENV}); without one, "
                                "an API on a non-loopback address gets a generated token")
    serve_cmd.add_argument("--records", default=None, metavar="DIR",
                           help="where voicemail, callbacks and the trigger log are kept")
    serve_cmd.add_argument("--agent-ws", metavar="URL", default=None,
                           help="with --http: connect each call to this bot WebSocket "
                                "(Twilio Media Streams framing)")
    serve_cmd.add_argument("--flow", metavar="FILE", default=None,
                           help="with --http: answer calls with this scripted flow (TOML)")
    serve_cmd.add_argument("--db", metavar="URL", default=None,
                           help="records database: sqlite:///FILE or postgresql+psycopg://... "
                                "(default: SQLite in --records)")
    serve_cmd.add_argument("--config", metavar="FILE",
                           help="warmline.toml (see warmline.example.toml); flags win over it")
    serve_cmd.add_argument("--workers", metavar="N", type=_workers, default=None,
                           help="run N full nodes on this host (SIP and HTTP ports base, "
                                "base+1, ...; media ports split), supervised, for Kamailio "
                                "in front (docs/deploy.md); default [cluster] workers, 1")
    serve_cmd.add_argument("--dispatcher-list", action="store_true",
                           help="print Kamailio's dispatcher list for these workers and exit")
    serve_cmd.add_argument("--exit-when-drained", action="store_true", default=None,
                           help="exit once a drain (SIGUSR1 or POST /admin/drain) has seen "
                                "the last live call end")
    config_cmd = commands.add_parser("config", parents=[common], help="config files")
    config_sub = config_cmd.add_subparsers(dest="config_command", required=True)
    check_cmd = config_sub.add_parser("check", help="validate a config file, naming each "
                                                    "problem's line and key")
    check_cmd.add_argument("file")
    db_cmd = commands.add_parser("db", parents=[common], help="the records database")
    db_sub = db_cmd.add_subparsers(dest="db_command", required=True)
    upgrade_cmd = db_sub.add_parser(
        "upgrade", help="migrate the records database to the newest schema (Alembic; "
                        "`serve` does it at start too); a database made before Alembic "
                        "is adopted with its rows")
    upgrade_cmd.add_argument("--db", metavar="URL", default=None,
                             help="sqlite:///FILE or postgresql+psycopg://... "
                                  "(default: SQLite in --records)")
    upgrade_cmd.add_argument("--records", default=str(defaults.records), metavar="DIR")
    kpis_cmd = commands.add_parser("kpis", parents=[common],
                                   help="the five KPIs from the records, overall and per intent")
    kpis_cmd.add_argument("--db", metavar="URL", default=None)
    kpis_cmd.add_argument("--records", default=str(defaults.records), metavar="DIR")
    kpis_cmd.add_argument("--days", type=float, default=31.0)
    demo_cmd = commands.add_parser(
        "demo", parents=[common],
        help="a whole escalation on loopback: caller, AI, warm transfer to a human")
    demo_cmd.add_argument("--out", default="warmline-demo", metavar="DIR",
                          help="where the recordings and report.html go")
    triggers_cmd = commands.add_parser("triggers", parents=[common],
                                       help="review how the escalation triggers behave")
    triggers_sub = triggers_cmd.add_subparsers(dest="triggers_command", required=True)
    report_cmd = triggers_sub.add_parser(
        "report", help="per trigger: how often it fired and what happened next")
    report_cmd.add_argument("--records", default=str(defaults.records), metavar="DIR")
    report_cmd.add_argument("--days", type=float, default=31.0,
                            help="only the last DAYS days (default 31)")
    trace_cmd = commands.add_parser(
        "trace", parents=[common],
        help="the SIP messages of a past call or handoff, as a ladder (or a pcap)")
    trace_cmd.add_argument("id", metavar="CALL_OR_HANDOFF_ID")
    trace_cmd.add_argument("--records", default=str(defaults.records), metavar="DIR")
    trace_cmd.add_argument("--pcap", metavar="FILE",
                           help="also write the messages as a pcap (Wireshark, sngrep)")
    _add_probe_command(commands, common)
    return parser


PROBE_EPILOG = """\
exit status:
  0  reachable and OK: 2xx to OPTIONS (with --call: answered, and audio came back)
  1  reachable but refused or failed: a final error status, auth failed, no answer
     within --timeout (408), unreachable (503), with --call not answered or no audio
  2  usage error: bad URI, unknown trunk, tel: without a trunk, broken config, bad --sip
  3  DNS failure: no such name, no records, DNS timeout

Each step (DNS, OPTIONS, the call's answer, its BYE) is bounded by --timeout.
Trunk passwords come from the config's password_env/password_file and are never printed."""


def _add_probe_command(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                       common: argparse.ArgumentParser) -> None:
    """`warmline probe`: what a destination offers, before it goes into a transfer plan."""
    probe_cmd = commands.add_parser(
        "probe", parents=[common], epilog=PROBE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        help="check a destination before it goes into a transfer plan: DNS, OPTIONS, "
             "auth, optionally a test call",
        description="Resolve a destination (RFC 3263), send it OPTIONS (status, round trip,\n"
                    "Allow/Supported: REFER, Replaces, timer, 100rel; the auth outcome) and,\n"
                    "with --call, place a short test call with a 1 kHz tone.")
    probe_cmd.add_argument("destination", metavar="URI",
                           help="sip:, sips: or tel: (tel: needs a trunk that serves it)")
    probe_cmd.add_argument("--trunk", metavar="NAME",
                           help="go through this [trunks.NAME] (default: the first trunk "
                                "that serves the destination, else directly)")
    probe_cmd.add_argument("--config", metavar="FILE",
                           help="warmline.toml for [trunks.*] and [dns]")
    probe_cmd.add_argument("--call", action="store_true",
                           help="also place a short test call (G.711, 1 s tone), count the "
                                "RTP that comes back, then BYE")
    probe_cmd.add_argument("--json", action="store_true",
                           help="print one JSON object instead of the report")
    probe_cmd.add_argument("--timeout", metavar="S", type=_probe_seconds,
                           default=DEFAULT_TIMEOUT,
                           help=f"bound on each step in seconds (default {DEFAULT_TIMEOUT:g})")
    probe_cmd.add_argument("--sip", metavar="udp:HOST:PORT",
                           help="where the probe sends from (default: the local address "
                                "that routes to the destination, any free port)")


def _db_upgrade(url: str) -> int:
    """`warmline db upgrade`: the schema to head; 1 naming the error when the database
    cannot be reached or migrated."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import SQLAlchemyError

    from warmline.records.migrate import current_revision, upgrade

    engine = create_engine(url)
    try:
        before = upgrade(engine)
        with engine.connect() as connection:
            after = current_revision(connection)
    except (SQLAlchemyError, OSError) as error:
        print(f"warmline db upgrade: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print(f"records database at revision {after} (was {before or 'none'})")
    return 0


def _workers(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of workers") from None
    if not 1 <= count <= 256:
        raise argparse.ArgumentTypeError("--workers must be 1 to 256")
    return count


def _probe_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < seconds <= 60:
        raise argparse.ArgumentTypeError("--timeout must be more than 0 and at most 60")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logs(args.log_level, args.log_format, redact=redact)
    if args.command == "serve":
        return _serve(parser, args, sys.argv[1:] if argv is None else argv)
    if args.command == "kpis":
        url = args.db or default_url(Path(args.records))
        print(json.dumps(kpi_report(url, args.days), indent=2))
        return 0
    if args.command == "config":
        return _check_config(Path(args.file))
    if args.command == "db":
        return _db_upgrade(args.db or default_url(Path(args.records)))
    if args.command == "demo":
        return _demo(Path(args.out))
    if args.command == "probe":
        return _probe(args)
    if args.command == "trace":
        return _trace(args)
    if args.command == "triggers":
        since = time.time() - args.days * 86400
        print(format_report(report(Path(args.records) / LOG_NAME, since)))
        return 0
    return 2


def _serve(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> int:
    """Check the config, the flow and every flag before anything binds, then run."""
    try:
        config = load_config(Path(args.config)) if args.config else None
        settings = _serve_settings(parser, args, config)
    except ConfigError as error:  # nothing starts on a broken config
        return _config_problems(error)
    except FlowError as error:
        print(error, file=sys.stderr)
        return 2
    if args.dispatcher_list or settings.workers > 1:
        return _workers_main(settings, args.dispatcher_list, argv)
    return _run(settings)


def _workers_main(settings: ServeSettings, print_list: bool, argv: list[str]) -> int:
    """The supervisor of --workers N, or (--dispatcher-list) the list Kamailio needs."""
    try:
        plans = plan_workers(settings, settings.workers)
    except ValueError as error:
        print(f"warmline: {error}", file=sys.stderr)
        return 2
    if print_list:
        print(dispatcher_list(plans), end="")
        return 0
    _install_fast_loop()
    return run_workers(settings, argv)


def _run(settings: ServeSettings) -> int:
    """Serve until stopped; a port in use or an unreadable key file is exit status 1."""
    _install_fast_loop()
    try:
        asyncio.run(serve(settings))
    except OSError as error:
        print(f"warmline: cannot start: {error}", file=sys.stderr)
        return 1
    return 0


def _serve_settings(parser: argparse.ArgumentParser, args: argparse.Namespace,
                    config: WarmlineConfig | None) -> ServeSettings:
    """Flags win over warmline.toml, which wins over the defaults on ServeSettings.

    One step per concern, in the order the checks have always run, so a
    command line with several mistakes still gets the same first complaint.
    """
    settings = _agent(ServeSettings(), args, config)  # a broken flow file: FlowError
    settings = _listeners(settings, parser, args, config)
    settings = _http(settings, parser, args, config)
    settings = _media(settings, parser, args, config)
    settings = _escalation(settings, parser, args, config)
    settings = _network(settings, config)
    settings = _limits(settings, parser, config)
    settings = _storage(settings, args, config)
    return _cluster(settings, args, config)


def _cluster(settings: ServeSettings, args: argparse.Namespace,
             config: WarmlineConfig | None) -> ServeSettings:
    """--workers and --exit-when-drained, else [cluster]."""
    section = config.cluster if config else None
    workers = args.workers or (section.workers if section else settings.workers)
    leave = args.exit_when_drained if args.exit_when_drained is not None \
        else (section.exit_when_drained if section else False)
    return replace(settings, workers=workers, exit_when_drained=leave)


def _agent(settings: ServeSettings, args: argparse.Namespace,
           config: WarmlineConfig | None) -> ServeSettings:
    """--agent-ws and --flow, else [agent]; the flow file is read here (FlowError);
    [agents.NAME], the agents a call may be handed to."""
    section = config.agent if config else None
    flow_file = args.flow or (section.flow if section else None)
    return replace(settings, agent_ws=args.agent_ws or (section.ws if section else None),
                   flow=load_flow(Path(flow_file)) if flow_file else None,
                   agents=config.build_agents() if config else {},
                   early_media=section.early_media if section else settings.early_media)


def _listeners(settings: ServeSettings, parser: argparse.ArgumentParser,
               args: argparse.Namespace, config: WarmlineConfig | None) -> ServeSettings:
    """--sip, else [sip] listen, else the default listener."""
    texts = args.sip or (config.sip.listen if config else None)
    listen = _listen_specs(parser, texts) if texts else settings.listen
    return replace(settings, listen=listen, tls=_tls_files(parser, args, listen))


def _listen_specs(parser: argparse.ArgumentParser, texts: list[str]) -> tuple[ListenSpec, ...]:
    try:
        return tuple(parse_listen(text) for text in texts)
    except ListenSpecError as error:
        parser.error(str(error))


def _tls_files(parser: argparse.ArgumentParser, args: argparse.Namespace,
               listen: tuple[ListenSpec, ...]) -> TlsFiles:
    """Flags only (warmline.toml names no key files); tls: listeners need a cert and key."""
    if any(spec.transport == "tls" for spec in listen) and not (args.tls_cert and args.tls_key):
        parser.error("--sip tls:... needs --tls-cert and --tls-key")
    return TlsFiles(args.tls_cert, args.tls_key, args.tls_ca)


def _http(settings: ServeSettings, parser: argparse.ArgumentParser, args: argparse.Namespace,
          config: WarmlineConfig | None) -> ServeSettings:
    """--http, else [http]; no HTTP listener: the SIP-only answerer. The API token from
    --api-token-file, else $WARMLINE_API_TOKEN, else [http] api_token_env/_file; an API
    that others can reach never runs open: it gets a generated token, printed once."""
    section = config.http if config else None
    text = args.http or (section.listen if section else None)
    if not text:
        return settings
    http = _http_spec(parser, text)
    token = _secret_flag(parser, "--api-token-file", args.api_token_file) \
        or os.environ.get(API_TOKEN_ENV) or (section.api_token() if section else None)
    if not token and not is_loopback(http.host):
        token = secrets.token_urlsafe(24)
        print(f"warmline: the API on {http.url} is reachable from other machines and no "
              f"token was given, so this one was made for this run (set {API_TOKEN_ENV} "
              f"or --api-token-file to choose it):\n  {token}", file=sys.stderr)
    return replace(settings, http=http, api_token=token or None)


def _secret_flag(parser: argparse.ArgumentParser, flag: str, path: str | None) -> str | None:
    if path is None:
        return None
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except OSError as error:
        parser.error(f"{flag} {path}: cannot read: {error.strerror}")
    if not value:
        parser.error(f"{flag} {path}: the file is empty")
    return value


def is_loopback(host: str) -> bool:
    """Whether only this machine can reach ``host`` (a name other than localhost: no)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _http_spec(parser: argparse.ArgumentParser, text: str) -> HttpSpec:
    try:
        return HttpSpec(*parse_host_port(text))
    except ValueError as error:
        parser.error(f"--http {error}")


def _media(settings: ServeSettings, parser: argparse.ArgumentParser, args: argparse.Namespace,
           config: WarmlineConfig | None) -> ServeSettings:
    """--media-ports, else [media] ports; codecs, hold audio and the advertised RTP address
    come from warmline.toml only."""
    text = args.media_ports or (config.media.ports if config else None)
    if text:
        settings = replace(settings, media_ports=_port_range(parser, text))
    if config is None:
        return settings
    hold_audio = config.media.hold_audio
    return replace(settings, codecs=tuple(config.media.codecs),
                   srtp=SrtpPolicy(config.media.srtp), rtp_timeout=config.media.rtp_timeout,
                   hold_audio=Path(hold_audio) if hold_audio else None,
                   media_advertise=config.media.advertise,
                   media_plane=PlaneKind(config.media.plane),
                   rtpengine_bridge=config.media.rtpengine_bridge,
                   relay_threads=config.media.relay_threads,
                   rtpengine=parse_ng_address(config.media.rtpengine)
                   if config.media.rtpengine else None)


def _port_range(parser: argparse.ArgumentParser, text: str) -> range:
    try:
        ports = PortRange.parse(text)
    except ValueError as error:
        parser.error(f"--media-ports {text!r}: {error}")
    return range(ports.start, ports.end)


def _escalation(settings: ServeSettings, parser: argparse.ArgumentParser,
                args: argparse.Namespace, config: WarmlineConfig | None) -> ServeSettings:
    """The policy from warmline.toml with --webhook and --escalate-to on top; needs --http."""
    if settings.http is None:
        if args.escalate_to or args.webhook:
            parser.error("--escalate-to and --webhook need --http (turns arrive over the API)")
        return settings
    public_url = settings.http.url
    policy = config.escalation(public_url) if config else EscalationPolicy(public_url=public_url)
    secret = _secret_flag(parser, "--webhook-secret-file", args.webhook_secret_file) \
        or os.environ.get(WEBHOOK_SECRET_ENV)
    if secret:
        policy.webhook_secret = secret
    if args.webhook:
        policy.webhook_url = args.webhook
    if args.escalate_to:
        policy.destination = _escalate_to(parser, args)
    return replace(settings, escalation=policy)


def _escalate_to(parser: argparse.ArgumentParser, args: argparse.Namespace) -> Destination:
    destination = Destination(args.escalate_to, args.escalate_mode, 30)
    try:
        destination.validate("--escalate-to")
    except HandoffError as error:
        parser.error(str(error))
    return destination


def _network(settings: ServeSettings, config: WarmlineConfig | None) -> ServeSettings:
    """[dns], [trunks.*] and the session timer come from warmline.toml only (passwords never
    on a command line);
    a password that cannot be read stopped `load_config` already, naming the key."""
    if config is None:
        return settings
    return replace(settings, trunks=config.build_trunks(),
                   dns_servers=tuple(config.dns.nameservers()), dns_timeout=config.dns.timeout,
                   user_agent=_user_agent(settings.user_agent, config),
                   destination_policy=config.destination_policy(),
                   trusted_identity=tuple(config.sip.trusted_identity))


def _user_agent(base: UserAgentConfig, config: WarmlineConfig) -> UserAgentConfig:
    """[sip] access (trusted networks, the challenge's accounts) and [limits] for SIP."""
    sip, limits = config.sip, config.limits
    return replace(base, session_timer=sip.session_timer(), trusted_networks=list(sip.trusted),
                   access=sip.access, auth_realm=sip.realm, auth_users=sip.auth_users(),
                   source_limit=RateLimit(limits.sip_rate, limits.sip_burst),
                   max_transactions=limits.max_transactions, retry_after=limits.retry_after,
                   max_queue_delay=limits.max_queue_delay)


def _limits(settings: ServeSettings, parser: argparse.ArgumentParser,
            config: WarmlineConfig | None) -> ServeSettings:
    """[limits] beyond the SIP core's; a listener asking for a challenge needs accounts."""
    if any(spec.access is AccessMode.CHALLENGE for spec in settings.listen) \
            and not settings.user_agent.auth_users:
        parser.error("a listener with ;access=challenge needs [[sip.accounts]] in --config "
                     "to check the answers against")
    if config is None:
        return settings
    limits = config.limits
    events = config.events
    kinds = frozenset(events.kinds) if events.kinds else DEFAULT_KINDS
    if events.url:
        settings = replace(settings, events=StatusCallbackSettings(
            events.url, events.secret(), kinds, events.attempts))
    if events.call_url_hosts:
        settings = replace(settings, call_urls=CallUrlSettings(
            events.secret(), tuple(events.call_url_hosts), kinds, events.attempts))
    settings = replace(settings, outbound=config.outbound.policy(),
                       callbacks=config.callbacks.settings())
    settings = replace(settings, trace_keep_days=config.trace.keep_days)
    collector = config.trace.collector()
    if collector is not None:
        settings = replace(settings, hep=HepSettings(collector, config.trace.hep_capture_id,
                                                     config.trace.password()))
    settings = replace(settings, limit_table=config.limit_table(),
                       cluster=config.cluster.settings(settings.http.url if settings.http
                                                       else None))
    return replace(settings, max_calls=limits.max_calls, http_body=limits.http_body,
                   ws_message=limits.ws_message, ws_audio_seconds=limits.ws_audio_seconds,
                   keep_ended_calls=limits.keep_ended_calls,
                   stream_limits=StreamLimits(limits.tcp_idle_timeout,
                                              limits.tcp_message_deadline,
                                              limits.tcp_per_source, limits.tcp_total))


def _storage(settings: ServeSettings, args: argparse.Namespace,
             config: WarmlineConfig | None) -> ServeSettings:
    """--records and --db, else [storage]; no database at all: SQLite in the records folder.
    [recording] (a folder of its own, else <records>/recordings) comes from the file only."""
    section = config.storage if config else None
    records = args.records or (section.records if section else None)
    return replace(settings, records=Path(records) if records else settings.records,
                   database=args.db or (section.database if section else None),
                   recording=config.recording.build() if config else settings.recording)


def _config_problems(error: ConfigError) -> int:
    """Each problem on its own line (file:line: key: what), and the exit status for them."""
    for problem in error.problems:
        print(problem, file=sys.stderr)
    return 2


def _check_config(path: Path) -> int:
    try:
        load_config(path)
    except ConfigError as error:
        return _config_problems(error)
    print(f"{path}: ok")
    return 0


def _demo(out: Path) -> int:
    from warmline.demo import print_report, run_demo

    _install_fast_loop()
    started = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - started:5.1f} s] {line}", flush=True)

    figures = asyncio.run(run_demo(out, say))
    print_report(figures, out)
    connected = figures["trigger_to_connected_s"] is not None
    return 0 if connected and figures["largest_gap_ms"] < 60 else 1


def _trace(args: argparse.Namespace) -> int:
    """Print a call's SIP ladder from the records folder; 1 when there is no trace."""
    try:
        call_id, messages = find_trace(Path(args.records), args.id)
    except LookupError as error:
        print(f"warmline trace: {error}", file=sys.stderr)
        return 1
    print(f"SIP trace of {call_id} ({len(messages)} messages):")
    print(ladder(messages))
    if args.pcap:
        local = _local_address(messages) or ("127.0.0.1", 5060)
        Path(args.pcap).write_bytes(pcap(messages, local))
        print(f"pcap written to {args.pcap}")
    return 0


def _local_address(messages: list[TracedMessage]) -> tuple[str, int] | None:
    """warmline's own address as the messages show it: the host of our Via on what we
    sent (the top Via of an outgoing request names us)."""
    for message in messages:
        if message.direction == "out" and not message.text.startswith("SIP/2.0"):
            for line in message.text.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() in ("via", "v"):
                    sent_by = value.split()[1].split(";")[0] if len(value.split()) > 1 else ""
                    host, _, port = sent_by.rpartition(":")
                    if host and port.isdigit():
                        return host, int(port)
                    break
    return None


def _probe(args: argparse.Namespace) -> int:
    """Read the config and --sip here; the checks and the report are warmline.probe's."""
    try:
        settings = _probe_settings(args)
    except ConfigError as error:
        report = ProbeReport(args.destination, args.call, problem="; ".join(error.problems))
    except ListenSpecError as error:
        report = ProbeReport(args.destination, args.call, problem=str(error))
    else:
        _install_fast_loop()
        report = asyncio.run(run_probe(settings))
    print(render(report, as_json=args.json))
    return report.exit_code


def _probe_settings(args: argparse.Namespace) -> ProbeSettings:
    """Trunks and DNS servers from --config (passwords read there, never printed)."""
    settings = ProbeSettings(args.destination, trunk=args.trunk, call=args.call,
                             timeout=args.timeout,
                             listen=parse_listen(args.sip) if args.sip else None)
    if not args.config:
        return settings
    config = load_config(Path(args.config))
    return replace(settings, trunks=config.build_trunks(),
                   nameservers=tuple(config.dns.nameservers()),
                   dns_timeout=config.dns.timeout)


def _install_fast_loop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


if __name__ == "__main__":
    sys.exit(main())
