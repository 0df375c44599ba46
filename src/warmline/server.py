"""`warmline serve`: listeners, the UA core, the calls, the HTTP API, clean shutdown.

Without --http every call goes to the SIP-only answerer (fast G.711 answers,
no media: what the SIP benchmarks measure). With --http the call engine
answers calls on the embedded relay, plays hold audio until the AI or a
transfer takes over, and the control API can transfer them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from warmline.agents.media_stream import MediaStreamAgent
from warmline.agents.scripted import ScriptedAgent
from warmline.brain.status_events import StatusCallbacks
from warmline.calls.call import Call
from warmline.calls.dialog_journal import DialogJournal
from warmline.calls.drain import Drain
from warmline.calls.sip_answerer import SipAnswerer
from warmline.cluster.limits import ConcurrencyLimits, LocalLimits, RedisLimits
from warmline.cluster.registry import SharedState, connect
from warmline.engine import CallEngine
from warmline.heap import HeapKeeper
from warmline.media.fastpath import describe_forwarder
from warmline.media.ng import NgClient
from warmline.media.plane import MediaPlane
from warmline.media.player import Player, load_wav
from warmline.media.relay import EmbeddedRelay
from warmline.media.rtpengine import PlaneKind, RtpenginePlane
from warmline.records.store import RecordWriter
from warmline.records.trace import SipTrace
from warmline.settings import HttpSpec, ServeSettings
from warmline.sip.compiled import describe
from warmline.sip.events import Target
from warmline.sip.useragent import UserAgent
from warmline.transport.hep import Endpoint, HepSender
from warmline.transport.listen import ListenSpec
from warmline.transport.shell import SipShell

log = logging.getLogger("warmline")
DRAIN_SECONDS = 2.0
DRAIN_SIGNAL = signal.SIGUSR1  # stop taking new calls, finish the live ones (calls/drain.py)
DRAIN_CHECK_SECONDS = 0.25  # how often a draining node looks for its last call's end


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


async def serve(settings: ServeSettings, stop: asyncio.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (or ``stop``), then hang up live calls and close."""
    stop = stop or asyncio.Event()
    _stop_on_signals(stop)
    user_agent = replace(settings.user_agent, credentials=[
        *settings.user_agent.credentials, *settings.trunks.accounts])
    shell = SipShell(UserAgent(user_agent), tls_server=settings.tls.server_context(),
                     tls_client=settings.tls.client_context(), resolver=settings.resolver(),
                     stream_limits=settings.stream_limits)
    async with contextlib.AsyncExitStack() as stack:
        side = await _take_calls(stack, shell, settings)
        stack.push_async_callback(shell.close)  # pushed last, closed first: no new SIP traffic
        # SIGUSR1's handler before the listeners: a drain asked for as soon as we are up
        # must never meet the default action (terminate)
        drain = side.node_drain or Drain(shell.ua, lambda: len(shell.ua.sessions), time.time)
        _drain_on_signal(drain, stop, settings.exit_when_drained)
        watch = asyncio.create_task(_watch_drain(drain))
        await _listen(shell, settings.listen)
        _say_what_runs_compiled()
        side.start()
        heap = HeapKeeper(lambda: len(shell.ua.sessions))
        heap.start()
        await stop.wait()
        watch.cancel()
        log.info("shutting down: %d live call(s)", len(shell.ua.sessions))
        await side.drain()
        await hang_up_all(shell)
        heap.stop()  # after the hang-ups: unfrozen, the next collection scans everything
    _log_totals(shell.ua, side.answered())


def _stop_on_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)


def _drain_on_signal(drain: Drain, stop: asyncio.Event, exit_when_drained: bool) -> None:
    """SIGUSR1 drains the node (SIGTERM still means: shut down now, hanging up)."""
    if exit_when_drained:
        drain.on_drained = stop.set
    asyncio.get_running_loop().add_signal_handler(
        DRAIN_SIGNAL, lambda: drain.start(DRAIN_SIGNAL.name))


async def _watch_drain(drain: Drain) -> None:
    """Notice the last live dialog ending while draining (the UA core has no hook)."""
    while True:
        await asyncio.sleep(DRAIN_CHECK_SECONDS)
        drain.check()


async def _listen(shell: SipShell, specs: tuple[ListenSpec, ...]) -> None:
    for spec in specs:
        bound = await shell.listen(spec)
        log.info("warmline listening on %s", bound)


def _say_what_runs_compiled() -> None:
    """pip hides a build's output, so a machine without a C compiler learns it here."""
    core, relay = describe(), describe_forwarder()
    if "compiled with mypyc" in core and relay.endswith("compiled") and "STALE" not in core:
        log.info("build: %s; %s", core, relay)
    else:
        log.warning("build: %s; %s. For the fast build, install a C compiler (gcc) and "
                    "reinstall warmline (pip install --force-reinstall --no-deps warmline)",
                    core, relay)


def _log_totals(ua: UserAgent, answered: int) -> None:
    counters = ua.counters
    log.info("stopped: %d call(s) answered; %d message(s) received, %d garbage dropped, "
             "%d bad request(s) answered", answered, counters.received,
             counters.garbage_dropped, counters.bad_requests)


@dataclass(frozen=True)
class CallSide:
    """Whoever answers calls, as serve() drives it: count, start after listening, drain."""

    answered: Callable[[], int]
    start: Callable[[], None] = lambda: None  # the listeners are open (register the trunks)
    drain: Callable[[], Awaitable[None]] = lambda: _nothing()  # before the calls are hung up
    node_drain: Drain | None = None  # the engine's (POST /admin/drain); None: serve makes one


async def _nothing() -> None:
    return None


async def _take_calls(stack: contextlib.AsyncExitStack, shell: SipShell,
                      settings: ServeSettings) -> CallSide:
    """Wire up whoever answers calls; returns how to count the calls it answered.

    Without an HTTP API nothing could transfer a call, so the SIP-only
    answerer takes them: fast G.711 answers, no media.
    """
    if settings.http is None:
        return await _answer_only(stack, shell, settings.media_host, settings.media_address)
    return await _engine(stack, shell, settings, settings.http)


async def _answer_only(stack: contextlib.AsyncExitStack, shell: SipShell,
                       host: str, advertised: str) -> CallSide:
    sink, media_port = await open_media_sink(host)
    stack.callback(sink.close)
    agent = SipAnswerer(shell.ua, shell.now, advertised, media_port)
    shell.on_event = agent.on_event
    return CallSide(lambda: agent.calls_answered)


def _media_plane(settings: ServeSettings) -> MediaPlane:
    """[media] plane: the embedded relay, or rtpengine anchoring legs with that relay
    behind it (media/rtpengine.py); rtpengine is pinged from now on (/readyz)."""
    relay = EmbeddedRelay(settings.media_host, settings.port_range(),
                          fast_path_threads=settings.relay_threads)
    if settings.media_plane is not PlaneKind.RTPENGINE or settings.rtpengine is None:
        return relay
    plane = RtpenginePlane(NgClient(*settings.rtpengine), relay,
                           bridge=settings.rtpengine_bridge)
    plane.start()
    log.info("media plane: rtpengine at udp:%s:%d%s", *settings.rtpengine,
             ", bridging plain pairs itself" if settings.rtpengine_bridge else "")
    return plane


async def _engine(stack: contextlib.AsyncExitStack, shell: SipShell, settings: ServeSettings,
                  http: HttpSpec) -> CallSide:
    """The call engine on its media plane, its records, its AI side and the HTTP API.

    Everything goes onto ``stack`` in start order, so it closes in reverse:
    API, engine, records writer (after the calls' last events), media plane.
    """
    relay = _media_plane(settings)
    stack.push_async_callback(relay.close)
    writer = _open_records(stack, settings)

    def on_call(call: Call) -> None:
        take_call(call)

    def on_return(call: Call, why: str, away: float) -> None:
        log.info("call %s back with the AI after %.1f s: %s", call.id, away, why,
                 extra={"call_id": call.id})
        take_call(call)

    hold_audio = None if settings.hold_audio is None else load_wav(settings.hold_audio, 8000)
    limits = _limits(settings)
    engine = CallEngine(shell, relay, settings.media_address, list(settings.codecs), on_call,
                        on_return, records_dir=settings.records,
                        escalation=settings.escalation, records=writer, hold_audio=hold_audio,
                        trunks=settings.trunks, resolver=shell.resolver,
                        trusted_identity=settings.trusted_identity, srtp=settings.srtp,
                        max_calls=settings.max_calls,
                        destination_policy=settings.destination_policy,
                        journal=_dialog_journal(stack, settings), rtp_timeout=settings.rtp_timeout,
                        status_events=_status_events(settings), sip_trace=SipTrace(),
                        trace_keep_days=settings.trace_keep_days,
                        keep_ended_calls=settings.keep_ended_calls,
                        recording=settings.recording, agents=settings.agents,
                        early_media=settings.early_media
                        if settings.agent_ws and settings.early_media > 0 else None,
                        outbound=settings.outbound, callbacks=settings.callbacks,
                        call_events=settings.call_urls.build() if settings.call_urls else None,
                        limits=limits, limit_table=settings.limit_table)
    engine.shared = _shared_state(engine, settings, limits)
    engine.agent_streams.max_message = settings.ws_message  # the bots' limits, every bot's
    engine.agent_streams.audio_seconds = settings.ws_audio_seconds
    engine.agent_streams.api_url = settings.http.url if settings.http else None
    shell.tap = await _taps(stack, engine.sip_trace, settings)
    take_call = _ai_side(engine, settings)  # bound before any call can arrive
    stack.push_async_callback(engine.close)
    await _start_api(stack, engine, settings, http)
    return CallSide(lambda: len(engine.calls) + len(engine.ended_calls), engine.start,
                    engine.registrations.stop, engine.drain)


def _limits(settings: ServeSettings) -> ConcurrencyLimits:
    """Calls at once per destination and trunk: in Redis for a cluster, else in memory."""
    cluster = settings.cluster
    if cluster is None or cluster.redis_url is None:
        return LocalLimits()
    return RedisLimits(connect(cluster.redis_url, cluster.redis_password), cluster.prefix,
                       cluster.entry_ttl)


def _shared_state(engine: CallEngine, settings: ServeSettings, limits: ConcurrencyLimits
                  ) -> SharedState | None:
    """The cluster's registry in Redis ([cluster] redis), or None: this node alone."""
    cluster = settings.cluster
    if cluster is None or cluster.redis_url is None:
        return None
    redis_url = cluster.redis_url
    if cluster.api_url is None and settings.http is not None:
        cluster = replace(cluster, api_url=settings.http.url)
    log.info("cluster: node %s, state shared in Redis at %s (API for other nodes: %s)",
             cluster.node_id, _without_password(redis_url), cluster.api_url)
    shared = SharedState(cluster, connect(redis_url, cluster.redis_password),
                         engine.live_call_rows,
                         engine.live_handoff_rows,
                         limits if isinstance(limits, RedisLimits) else None,
                         engine.callback_book.as_dicts)
    engine.callback_book.on_change = shared.callback_changed
    return shared


def _without_password(url: str) -> str:
    """A Redis URL fit for a log line."""
    head, at, tail = url.rpartition("@")
    return f"{head.split('://')[0]}://***@{tail}" if at else url


async def _taps(stack: contextlib.AsyncExitStack, trace: SipTrace | None,
                settings: ServeSettings) -> Callable[[str, bytes, Target], None] | None:
    """What sees every SIP message in and out: the per-call trace, and the HEP v3 copy
    to a collector when [trace] hep names one."""
    taps = [trace.tap] if trace is not None else []
    if settings.hep is not None:
        local = {spec.transport: Endpoint(*spec.public) for spec in settings.listen}
        sender = HepSender(settings.hep.collector, local, capture_id=settings.hep.capture_id,
                           password=settings.hep.password)
        await sender.open()
        stack.callback(sender.close)
        taps.append(sender.tap)
        log.info("a HEP v3 copy of every SIP message to %s:%d", *settings.hep.collector)
    if len(taps) < 2:
        return taps[0] if taps else None

    def every_tap(direction: str, data: bytes, peer: Target) -> None:
        for tap in taps:
            tap(direction, data, peer)
    return every_tap


def _open_records(stack: contextlib.AsyncExitStack, settings: ServeSettings) -> RecordWriter:
    settings.records.mkdir(parents=True, exist_ok=True)
    stack.enter_context(_records_lock(settings.records))
    writer = RecordWriter(settings.database_url, settings.records)
    stack.callback(writer.close)
    return writer


def _status_events(settings: ServeSettings) -> StatusCallbacks | None:
    """Signed status callbacks to [events] url, when one is configured."""
    if settings.events is None:
        return None
    log.info("status callbacks to %s", settings.events.url)
    return settings.events.build()


def _dialog_journal(stack: contextlib.AsyncExitStack, settings: ServeSettings) -> DialogJournal:
    """The dialogs we own (calls/dialog_journal.py); closed after the calls are hung up."""
    journal = DialogJournal(settings.records / "dialogs.db")
    stack.callback(journal.close)
    return journal


@contextlib.contextmanager
def _records_lock(folder: Path) -> Iterator[None]:
    """One engine per records folder: a second one would ship the first's journal and,
    worse, BYE every call of the first as 'left up by a crash' (its dialog journal).
    OSError naming the folder and the holder's PID when another engine has it."""
    path = folder / "warmline.lock"
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise OSError(f"records folder {folder} is in use by another warmline (PID {holder}); "
                      "give each engine its own --records") from None
    handle.truncate(0)
    handle.write(str(os.getpid()))
    handle.flush()
    try:
        yield
    finally:
        handle.close()  # closing releases the lock


def _ai_side(engine: CallEngine, settings: ServeSettings) -> Callable[[Call], None]:
    """Who takes a call that is with the AI: the bot, else the scripted flow, else hold audio.

    The bot falls back to hold audio itself when it cannot take a call, and
    with neither a bot nor a flow the caller still hears something: never
    dead air.
    """
    if settings.agent_ws:
        return MediaStreamAgent(engine, settings.agent_ws, max_message=settings.ws_message,
                                audio_seconds=settings.ws_audio_seconds,
                                api_url=settings.http.url if settings.http else None).on_call
    if settings.flow is not None:
        return ScriptedAgent(engine, settings.flow).on_call

    def hold(call: Call) -> None:
        call.caller.media.play(Player(engine.hold_audio(), loop=True))

    return hold


async def _start_api(stack: contextlib.AsyncExitStack, engine: CallEngine,
                     settings: ServeSettings, http: HttpSpec) -> None:
    from warmline.api import build_app, start_http, stop_http  # FastAPI only when asked for

    app = build_app(engine, settings.api_token, settings.database_url, settings.http_body)
    # a media stream per call, and room for the API's own requests besides
    concurrency = settings.max_calls + 500 if settings.max_calls else None
    server, task = await start_http(app, http.host, http.port, ws_max_size=settings.ws_message,
                                    concurrency=concurrency)
    stack.push_async_callback(stop_http, server, task)
    log.info("warmline HTTP API on %s (OpenAPI at /openapi.json)", http.url)


def tune_garbage_collector() -> None:
    """Freeze start-up objects and collect young objects less often (the benches of the
    SIP core and relay workers; `serve` runs heap.HeapKeeper, which also freezes what
    survives each second).

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
