"""The `warmline` command."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from warmline import __version__
from warmline.agents.scripted import FlowError, load_flow
from warmline.brain.calibration import LOG_NAME, format_report, report
from warmline.brain.escalation import EscalationPolicy
from warmline.config import ConfigError, WarmlineConfig
from warmline.config import load as load_config
from warmline.logs import configure as configure_logs
from warmline.media.relay import PortRange
from warmline.records.report import kpi_report
from warmline.records.store import default_url
from warmline.server import HttpSpec, TlsFiles, serve
from warmline.sip.compiled import describe
from warmline.transfer.handoff import Destination, HandoffError
from warmline.transport.listen import ListenSpec, ListenSpecError, parse_host_port, parse_listen

LOG_LEVELS = ["debug", "info", "warning", "error"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="warmline",
        description="Hand live calls from an AI voice agent to a human over SIP.")
    parser.add_argument("--version", action="version",
                        version=f"warmline {__version__} ({describe()})")
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
        help="run the engine; with no config every call is answered by a placeholder")
    serve_cmd.add_argument(
        "--sip", action="append", metavar="TRANSPORT:HOST:PORT",
        help="listen on udp:, tcp: or tls: HOST:PORT (repeatable; default udp:127.0.0.1:5070)")
    serve_cmd.add_argument("--tls-cert", help="PEM certificate chain for tls: listeners")
    serve_cmd.add_argument("--tls-key", help="PEM private key for --tls-cert")
    serve_cmd.add_argument("--tls-ca", help="CA bundle to verify TLS peers we connect to")
    serve_cmd.add_argument(
        "--http", metavar="HOST:PORT",
        help="serve the control API (calls, transfers, handoffs) and answer calls with media")
    serve_cmd.add_argument("--media-ports", metavar="START-END", default=None,
                           help="UDP ports for RTP/RTCP (default 20000-30000)")
    serve_cmd.add_argument("--escalate-to", metavar="URI",
                           help="with --http: where a firing trigger sends the caller")
    serve_cmd.add_argument("--escalate-mode", default="warm",
                           choices=["blind", "bridge", "warm", "attended"])
    serve_cmd.add_argument("--webhook", metavar="URL",
                           help="POST the signed context packet here before the human rings")
    serve_cmd.add_argument("--webhook-secret", default="",
                           help="HMAC-SHA256 key for X-Warmline-Signature")
    serve_cmd.add_argument("--api-token", default=None,
                           help="require 'Authorization: Bearer TOKEN' on the HTTP API")
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
    config_cmd = commands.add_parser("config", parents=[common], help="config files")
    config_sub = config_cmd.add_subparsers(dest="config_command", required=True)
    check_cmd = config_sub.add_parser("check", help="validate a config file, naming each "
                                                    "problem's line and key")
    check_cmd.add_argument("file")
    kpis_cmd = commands.add_parser("kpis", parents=[common],
                                   help="the five KPIs from the records, overall and per intent")
    kpis_cmd.add_argument("--db", metavar="URL", default=None)
    kpis_cmd.add_argument("--records", default="warmline-records", metavar="DIR")
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
    report_cmd.add_argument("--records", default="warmline-records", metavar="DIR")
    report_cmd.add_argument("--days", type=float, default=31.0,
                            help="only the last DAYS days (default 31)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logs(args.log_level, args.log_format)
    if args.command == "serve":
        return _serve(parser, args)
    if args.command == "kpis":
        url = args.db or default_url(Path(args.records))
        print(json.dumps(kpi_report(url, args.days), indent=2))
        return 0
    if args.command == "config":
        return _check_config(Path(args.file))
    if args.command == "demo":
        return _demo(Path(args.out))
    if args.command == "triggers":
        since = time.time() - args.days * 86400
        print(format_report(report(Path(args.records) / LOG_NAME, since)))
        return 0
    return 2


def _serve(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    config = None
    if args.config:
        try:
            config = load_config(Path(args.config))
        except ConfigError as error:  # nothing starts on a broken config
            for problem in error.problems:
                print(problem, file=sys.stderr)
            return 2
    flow_file = args.flow or (config.agent.flow if config and config.agent else None)
    try:
        flow = load_flow(Path(flow_file)) if flow_file else None
    except FlowError as error:
        print(error, file=sys.stderr)
        return 2
    listen = args.sip or (config.sip.listen if config else ["udp:127.0.0.1:5070"])
    try:
        specs: list[ListenSpec] = [parse_listen(s) for s in listen]
    except ListenSpecError as error:
        parser.error(str(error))
    if any(spec.transport == "tls" for spec in specs) and not (args.tls_cert and args.tls_key):
        parser.error("--sip tls:... needs --tls-cert and --tls-key")
    http_text = args.http or (config.http.listen if config and config.http else None)
    http = _http_spec(parser, http_text) if http_text else None
    ports = _port_range(parser, args.media_ports or
                        (config.media.ports if config else "20000-30000"))
    escalation = _escalation(parser, args, http, config)
    records = args.records or (config.storage.records if config else "warmline-records")
    api_token = args.api_token or (config.http.api_token if config and config.http else None)
    media = config.media if config else None
    _install_fast_loop()
    try:
        asyncio.run(serve(specs, TlsFiles(args.tls_cert, args.tls_key, args.tls_ca),
                          http=http, media_ports=ports, escalation=escalation,
                          records=Path(records), api_token=api_token,
                          codecs=list(media.codecs) if media else None,
                          hold_audio=media.hold_audio if media else None,
                          database=args.db or (config.storage.database if config else None),
                          agent_ws=args.agent_ws or (config.agent.ws if config and config.agent
                                                     else None), flow=flow))
    except OSError as error:
        print(f"warmline: cannot start: {error}", file=sys.stderr)
        return 1
    return 0


def _http_spec(parser: argparse.ArgumentParser, text: str) -> HttpSpec:
    try:
        return HttpSpec(*parse_host_port(text))
    except ValueError as error:
        parser.error(f"--http {error}")


def _port_range(parser: argparse.ArgumentParser, text: str) -> PortRange:
    try:
        return PortRange.parse(text)
    except ValueError as error:
        parser.error(f"--media-ports {text!r}: {error}")


def _escalation(parser: argparse.ArgumentParser, args: argparse.Namespace,
                http: HttpSpec | None, config: WarmlineConfig | None) -> EscalationPolicy | None:
    if http is None:
        if args.escalate_to or args.webhook:
            parser.error("--escalate-to and --webhook need --http (turns arrive over the API)")
        return None
    public_url = f"http://{http.host}:{http.port}"
    policy = config.escalation(public_url) if config else EscalationPolicy(public_url=public_url)
    if args.webhook:
        policy.webhook_url, policy.webhook_secret = args.webhook, args.webhook_secret
    if args.escalate_to:
        destination = Destination(args.escalate_to, args.escalate_mode, 30)
        try:
            destination.validate("--escalate-to")
        except HandoffError as error:
            parser.error(str(error))
        policy.destination = destination
    return policy


def _check_config(path: Path) -> int:
    try:
        load_config(path)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        return 2
    print(f"{path}: ok")
    return 0


def _demo(out: Path) -> int:
    from warmline.demo import print_report, run_demo

    _install_fast_loop()
    figures = asyncio.run(run_demo(out))
    print_report(figures, out)
    connected = figures["trigger_to_connected_s"] is not None
    return 0 if connected and figures["largest_gap_ms"] < 60 else 1


def _install_fast_loop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    uvloop.install()


if __name__ == "__main__":
    sys.exit(main())
