"""`warmline serve`: listeners, the UA core, the calls, the HTTP API, clean shutdown.

Without --http every call goes to the SIP-only answerer (fast G.711 answers,
no media: what the SIP benchmarks measure). With --http the call engine
answers calls on the embedded relay, plays hold audio until the AI or a
transfer takes over, and the control API can transfer them.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from warmline.agents.media_stream import MediaStreamAgent
from warmline.agents.scripted import Flow, ScriptedAgent
from warmline.brain.escalation import EscalationPolicy
from warmline.calls.call import Call
from warmline.calls.sip_answerer import SipAnswerer
from warmline.engine import CallEngine
from warmline.media.player import Player, load_wav
from warmline.media.relay import EmbeddedRelay, PortRange
from warmline.records.store import RecordWriter, default_url
from warmline.sip.useragent import UserAgent, UserAgentConfig
from warmline.transport.listen import ListenSpec
from warmline.transport.shell import SipShell

log = logging.getLogger("warmline")
DRAIN_SECONDS = 2.0


@dataclass(frozen=True)
class TlsFiles:
    cert: str | None = None
    key: str | None = None
    ca: str | None = None

    def server_context(self) -> ssl.SSLContext | None:
        if not self.cert:
            return None
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=self.ca)
        return context


class _MediaSink(asyncio.DatagramProtocol):
    """Absorbs RTP sent to the SIP-only answerer so peers see an open port, not ICMP errors."""

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        pass


async def open_media_sink(host: str) -> tuple[asyncio.DatagramTransport, int]:
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    transport, _ = await loop.create_datagram_endpoint(_MediaSink, local_addr=(host, 0),
                                                       family=family)
    return transport, transport.get_extra_info("sockname")[1]


@dataclass(frozen=True)
class HttpSpec:
    host: str
    port: int


async def serve(specs: list[ListenSpec], tls: TlsFiles, stop: asyncio.Event | None = None,
                config: UserAgentConfig | None = None, http: HttpSpec | None = None,
                media_ports: PortRange | None = None,
                escalation: EscalationPolicy | None = None,
                records: Path = Path("warmline-records"), api_token: str | None = None,
                codecs: list[str] | None = None, hold_audio: str | None = None,
                database: str | None = None, agent_ws: str | None = None,
                flow: Flow | None = None) -> None:
    """Run until SIGINT/SIGTERM (or ``stop``), then hang up live calls and close."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    ua = UserAgent(config or UserAgentConfig())
    shell = SipShell(ua, tls_server=tls.server_context(), tls_client=tls.client_context())
    async with contextlib.AsyncExitStack() as stack:
        if http is None:
            answered = await _answer_only(stack, shell, specs[0].host)
        else:
            answered = await _engine(stack, shell, specs[0].host, http,
                                     media_ports or PortRange(20000, 30000),
                                     escalation or EscalationPolicy(), records, api_token,
                                     codecs or ["PCMU", "PCMA", "G722", "opus"], hold_audio,
                                     database or default_url(records), agent_ws, flow)
        stack.push_async_callback(shell.close)
        for spec in specs:
            bound = await shell.listen(spec)
            log.info("warmline listening on %s", bound)
        tune_garbage_collector()
        await stop.wait()
        log.info("shutting down: %d live call(s)", len(ua.sessions))
        await hang_up_all(shell)
    counters = ua.counters
    log.info("stopped: %d call(s) answered; %d message(s) received, %d garbage dropped, "
             "%d bad request(s) answered", answered(), counters.received,
             counters.garbage_dropped, counters.bad_requests)


async def _answer_only(stack: contextlib.AsyncExitStack, shell: SipShell,
                       host: str) -> Callable[[], int]:
    sink, media_port = await open_media_sink(host)
    stack.callback(sink.close)
    agent = SipAnswerer(shell.ua, shell.now, host, media_port)
    shell.on_event = agent.on_event
    return lambda: agent.calls_answered


async def _engine(stack: contextlib.AsyncExitStack, shell: SipShell, host: str,
                  http: HttpSpec, ports: PortRange,
                  escalation: EscalationPolicy, records: Path,
                  api_token: str | None, codecs: list[str],
                  hold_audio: str | None, database: str,
                  agent_ws: str | None, flow: Flow | None) -> Callable[[], int]:
    from warmline.api import build_app, start_http, stop_http  # FastAPI only when asked for

    relay = EmbeddedRelay(host, ports)
    stack.push_async_callback(relay.close)

    def on_call(call: Call) -> None:
        if bot is not None:
            bot.on_call(call)  # the external AI takes the call (hold audio if it cannot)
        elif scripted is not None:
            scripted.on_call(call)
        else:
            call.caller.media.play(Player(engine.hold_audio(), loop=True))  # never dead air

    def on_return(call: Call, why: str, away: float) -> None:
        log.info("call %s back with the AI after %.1f s: %s", call.id, away, why,
                 extra={"call_id": call.id})
        on_call(call)

    records.mkdir(parents=True, exist_ok=True)
    writer = RecordWriter(database, records / "pending-events.jsonl")
    stack.callback(writer.close)  # after the calls: their last events get written
    engine = CallEngine(shell, relay, host, codecs, on_call, on_return, records_dir=records,
                        escalation=escalation, records=writer,
                        hold_audio=load_wav(hold_audio, 8000) if hold_audio else None)
    bot = MediaStreamAgent(engine, agent_ws) if agent_ws else None
    scripted = ScriptedAgent(engine, flow) if flow is not None else None
    stack.push_async_callback(engine.close)
    server, task = await start_http(build_app(engine, api_token, database), http.host,
                                    http.port)
    stack.push_async_callback(stop_http, server, task)
    log.info("warmline HTTP API on http://%s:%d (OpenAPI at /openapi.json)", http.host,
             http.port)
    return lambda: len(engine.calls)


def tune_garbage_collector() -> None:
    """Freeze start-up objects and collect young objects less often.

    The core leaves no reference cycles behind a call (tested), so frequent
    generation-0 passes only cost time on the per-message hot path.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)


async def hang_up_all(shell: SipShell) -> None:
    """BYE/CANCEL/480 every live call and give the peers a moment to answer."""
    def hang_up(now: float) -> None:
        for session in shell.ua.sessions:
            shell.ua.bye(session, now)

    shell.run(hang_up)
    deadline = shell.now() + DRAIN_SECONDS
    while shell.ua.sessions and shell.now() < deadline:
        await asyncio.sleep(0.05)
