"""The engine an AI app holds: calls, transfers and escalation together.

This is the composition root of the in-process API (and what `serve`, the
demo and the HTTP API are built on): the switchboard answers calls on the
media plane, the transfers run handoffs on them, the brain turns the AI's
turns into escalations with their context, and every call and handoff event
goes to the records. Each part is given what it needs at construction; none
of them knows this class.

    engine = CallEngine(shell, relay, "127.0.0.1", ["PCMU", "PCMA"], on_call, on_return)
    engine.transfer(call.id, Handoff(call.id, Destination(...)))
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from warmline.agents.handoff import AgentSpec, AgentStreams
from warmline.brain.calibration import TriggerLog
from warmline.brain.escalation import EscalationPolicy
from warmline.brain.redact import redact, redact_value
from warmline.brain.service import Brain, TurnResult
from warmline.brain.status_events import CallStatusUrls, StatusCallbacks
from warmline.brain.turns import Turn
from warmline.calls.adoption import Adoption
from warmline.calls.call import Call, CallState, EndedCall
from warmline.calls.dialog_journal import DialogJournal
from warmline.calls.drain import Drain, DrainState
from warmline.calls.recording import (
    CallRecordings,
    RecordingAction,
    RecordingConflict,
    RecordingMode,
    RecordingPhase,
    RecordingSettings,
)
from warmline.calls.registrations import TrunkRegistrations
from warmline.calls.switchboard import KEEP_ENDED_SECONDS, Overload, Switchboard
from warmline.calls.trunks import NoRoute, Trunks
from warmline.calls.watchdog import SilenceWatchdog
from warmline.cluster.limits import ConcurrencyLimits, LimitTable, LocalLimits
from warmline.cluster.registry import SharedState
from warmline.cluster.takeover import OrphanCall, callback_key
from warmline.media.plane import MediaPlane
from warmline.media.player import Player, Samples, ringback, whole_frames
from warmline.media.sdes import SrtpPolicy
from warmline.media.tts import EspeakTts, TextToSpeech, TtsError
from warmline.records.retention import sweep_recordings
from warmline.records.store import Event, RecordWriter
from warmline.records.trace import SipTrace, TracedMessage, cleaned
from warmline.records.trace_writer import TraceWriter
from warmline.sip.access import parse_networks
from warmline.sip.registration import Registration
from warmline.transfer.callback_dialler import CallbackDialler, CallbackSettings
from warmline.transfer.callback_schedule import CallbackProgress, DialOutcome
from warmline.transfer.callbacks import CallbackBook, ScheduledCallback
from warmline.transfer.handoff import (
    Destination,
    Handoff,
    HandoffError,
    HandoffEvent,
    HandoffRecord,
    HandoffStatus,
    Problem,
    ShownHandoff,
    is_agent_uri,
)
from warmline.transfer.live import TransferServices
from warmline.transfer.outbound import OutboundPolicy, OutboundRequest, Then, place
from warmline.transfer.policy import DestinationPolicy
from warmline.transfer.service import Transfers
from warmline.transport.resolver import ResolutionError, Resolver
from warmline.transport.shell import SipShell

log = logging.getLogger("warmline")
PAST_HANDOFFS = 500  # handoffs of forgotten calls still listed by GET /handoffs
TRACE_DELAY = 5.0  # seconds after the call ends before its SIP trace is written
FORGET_EVERY_SECONDS = 2.0  # ended calls are let go at least this often (and as calls come)
RETENTION_SWEEP = 3600.0  # seconds between two sweeps of recordings past their retention
LEFT_OVER_ASK_SECONDS = 2.0  # asking Redis which left-over dialogs another node took
# event data the records keep verbatim: what calls are routed by, and file paths
ROUTING_KEYS = frozenset({"to", "caller", "uri", "number", "path"})
CallHandler = Callable[[Call], None]
ReturnHandler = Callable[[Call, str, float], None]  # call, why, seconds away

__all__ = ["Call", "CallEngine", "TurnResult"]


class CallEngine:
    """Answers calls, runs handoffs, escalates on triggers, keeps the records.

    ``on_call`` gets every answered call (the AI takes it from there);
    ``on_return`` hears when a caller comes back to the AI after a handoff.
    ``trusted_identity``: the networks (CIDR) whose P-Asserted-Identity is believed;
    from anywhere else it is dropped (RFC 3325), so nobody can claim a bank's number.
    ``srtp``: when legs use SDES-SRTP (a trunk's own policy wins for legs through it).
    ``early_media``: calls ring with early media (183, ringback) until the AI side
    calls :meth:`answer`, at most that many seconds; None answers them at once.
    ``destination_policy``: checked by the API for the destinations a request names.
    ``journal``: the dialogs owned, so that a start after a crash ends what it left up.
    ``rtp_timeout``: a caller sending neither RTP nor RTCP this long is hung up (0: never).
    ``status_events``: signed status callbacks (brain/status_events.py), or None.
    ``sip_trace``: the shell's tap, kept per call and stored in ``traces.sqlite`` at its
    end; ``trace_keep_days``: stored traces older are deleted (0: kept).
    ``keep_ended_calls``: seconds an ended call stays listed (``ended_calls`` after its
    first few seconds whole in ``calls``; then: the records).
    ``max_calls``: calls at once; a new one past it is answered 503 with the SIP
    core's Retry-After (0: no cap), as is one that finds every media port taken.
    ``outbound``: whom :meth:`place_call` and the callback dialler may ring, as whom
    (default: nobody). ``callbacks``: dial the callbacks promised (None: kept, never
    dialled). ``call_events``: per-call status callback URLs (None: refused).
    ``recording``: which calls are recorded, after which consent, kept how long
    (calls/recording.py); by default none unless the API asks.
    ``agents``: the agents a call may be handed to by name (agent:NAME, ``[agents.NAME]``);
    a ws:// URL works without, subject to the destination policy for API requests.
    ``limits`` and ``limit_table``: calls at once per destination and trunk (in memory by
    default, in Redis for a cluster); ``shared``: the cluster's registry in Redis (None:
    this node alone), told of every call and handoff as they change.
    """

    def __init__(self, shell: SipShell, plane: MediaPlane, media_address: str, codecs: list[str],
                 on_call: CallHandler | None = None, on_return: ReturnHandler | None = None,
                 *, records_dir: Path = Path("warmline-records"),
                 escalation: EscalationPolicy | None = None,
                 records: RecordWriter | None = None, tts: TextToSpeech | None = None,
                 hold_audio: Samples | None = None, trunks: Trunks | None = None,
                 resolver: Resolver | None = None,
                 trusted_identity: Sequence[str] = (),
                 srtp: SrtpPolicy = SrtpPolicy.ACCEPT,
                 early_media: float | None = None, max_calls: int = 0,
                 destination_policy: DestinationPolicy | None = None,
                 journal: DialogJournal | None = None, rtp_timeout: float = 0.0,
                 status_events: StatusCallbacks | None = None,
                 sip_trace: SipTrace | None = None, trace_keep_days: float = 0.0,
                 keep_ended_calls: float = KEEP_ENDED_SECONDS,
                 recording: RecordingSettings | None = None,
                 outbound: OutboundPolicy | None = None,
                 callbacks: CallbackSettings | None = None,
                 call_events: CallStatusUrls | None = None,
                 agents: Mapping[str, AgentSpec] | None = None,
                 limits: ConcurrencyLimits | None = None,
                 limit_table: LimitTable | None = None,
                 shared: SharedState | None = None) -> None:
        self.shared = shared
        # every SIP message of recent calls, written beside the records when a call ends
        self.sip_trace = sip_trace
        self._traces_due: dict[str, asyncio.TimerHandle] = {}
        self._written: set[str] = set()  # calls whose trace is stored (until forgotten)
        self.trace_keep_days = trace_keep_days
        # handoffs of calls another node took over (rare: a stall past the cluster TTL)
        self._let_go_handoffs: set[str] = set()
        # every recorded call and handoff step, pushed to an integrator's URL as it happens
        self.status_events = status_events
        # where a transfer asked for from outside may go; None: anywhere (in-process use)
        self.destination_policy = destination_policy
        self.on_call: CallHandler = on_call or (lambda call: None)
        self.on_return: ReturnHandler = on_return or (lambda call, why, away: None)
        self.records_dir = records_dir  # voicemail recordings, callbacks, the trigger log
        self._trace_writer = TraceWriter(records_dir, redact) if sip_trace else None
        self.records = records
        self.tts: TextToSpeech = tts or EspeakTts()
        self._hold = whole_frames(hold_audio) if hold_audio is not None else ringback()
        self.handoffs: dict[str, Handoff] = {}  # of the calls in ``calls``, whole
        # every handoff GET /handoffs shows, in the order they started: whole while its
        # call is in memory, then as recorded while the call is listed (``ended_calls``)
        self.shown_handoffs: dict[str, ShownHandoff] = {}
        # the latest handoffs of calls no longer listed, for the dashboard's list
        self.past_handoffs: deque[HandoffRecord] = deque(maxlen=PAST_HANDOFFS)
        self._tasks: set[asyncio.Task[None]] = set()
        self._callbacks = CallbackBook(records_dir / "callbacks.jsonl")
        self._callbacks.load()  # what earlier runs promised, and how far they got
        self.outbound = outbound or OutboundPolicy()
        self.call_events = call_events  # per-call status URLs, or None: refused
        self._callback_calls: dict[str, str] = {}  # outbound call id -> promise (handoff id)
        self.dialler = None if callbacks is None else CallbackDialler(
            self._callbacks, callbacks, self._callback_problem, self._place_callback,
            self.record)
        self.recordings = CallRecordings(recording or RecordingSettings(), records_dir,
                                         self.tts, self.record)
        self._awaiting_consent: dict[str, str] = {}  # call id: the handoff waiting for it
        self.brain = Brain(escalation or EscalationPolicy(), TriggerLog(records_dir),
                           self.record)
        self.switchboard = Switchboard(
            shell, plane, media_address, codecs, self, trunks=trunks, resolver=resolver,
            trusted_identity=parse_networks(trusted_identity, "trusted_identity"),
            srtp=srtp, early_media=early_media, max_calls=max_calls,
            retry_after=shell.ua.config.retry_after, journal=journal,
            keep_ended=keep_ended_calls)
        self.adoption = Adoption(self.switchboard)  # calls a dead node left, taken here
        # POST /admin/drain or SIGUSR1: new calls refused 503, live ones finish
        self.drain = Drain(shell.ua, lambda: len(shell.ua.sessions), time.time)
        self.watchdog = SilenceWatchdog(rtp_timeout, self.hang_up) if rtp_timeout > 0 else None
        self.registrations = TrunkRegistrations(shell, self.switchboard.trunks,
                                                self.switchboard.resolver)
        # the streams to the agents calls are handed to (mode agent)
        self.agent_streams = AgentStreams(self, agents)
        self.transfers = Transfers(self.switchboard, TransferServices(
            self.tts, self.hold_audio, self.brain.deliver, records_dir, self._callbacks,
            agents=self.agent_streams, limits=limits or LocalLimits(),
            limit_table=limit_table or LimitTable()), self._returned)

    # -- what an AI app uses -----------------------------------------------------------
    @property
    def calls(self) -> dict[str, Call]:
        """Live calls, and calls ended in the last few seconds, whole."""
        return self.switchboard.calls

    @property
    def ended_calls(self) -> dict[str, EndedCall]:
        """What is kept of the calls that ended before that, while the API lists them."""
        return self.switchboard.ended_calls

    def known_call(self, call_id: str) -> Call | EndedCall | None:
        """The call, whole or as listed after its end; None once the records alone know it."""
        return self.calls.get(call_id) or self.ended_calls.get(call_id)

    def call_listing(self) -> list[dict[str, Any]]:
        """GET /calls on this node: every call held, whole or as listed after its end."""
        return [*(call.as_dict() for call in self.calls.values()),
                *(call.as_dict() for call in self.ended_calls.values())]

    @property
    def callbacks(self) -> list[ScheduledCallback]:
        """Callbacks promised to callers nobody could take, newest last."""
        return self._callbacks.promised

    @property
    def callback_book(self) -> CallbackBook:
        """The promises and the dialler's progress on each (``GET /callbacks``)."""
        return self._callbacks

    @property
    def escalation(self) -> EscalationPolicy:
        """What a trigger leads to and how context travels (change it in place)."""
        return self.brain.policy

    @property
    def return_announcement(self) -> str | None:
        """Said to a caller coming back to the AI after a failed transfer (None: nothing)."""
        return self.transfers.return_announcement

    @return_announcement.setter
    def return_announcement(self, text: str | None) -> None:
        self.transfers.return_announcement = text

    def answer(self, call: Call) -> None:
        """The AI side is ready: a call still ringing with early media is answered now."""
        self.switchboard.answer(call)

    def transfer(self, call_id: str, handoff: Handoff) -> Handoff:
        """Start ``handoff`` on the call; HandoffError (its ``problem`` says why) when it cannot.

        An AI app calls this with a :class:`Handoff` and gets the same checks as HTTP.
        """
        return self._start(self._call(call_id), handoff)

    def hand_back(self, call_id: str, report: str = "") -> None:
        """The agent a call was handed to ends its part (POST /calls/{id}/return): the
        caller goes back to the first agent (a temporary handoff) or the call ends.
        HandoffError CONFLICT when no agent the call was handed to has it."""
        call = self._call(call_id)
        if call.ended or not self.agent_streams.hand_back(call, report):
            raise HandoffError(f"call {call_id} is not with an agent it was handed to",
                               Problem.CONFLICT)

    def add_turn(self, call_id: str, turn: Turn) -> TurnResult:
        """Record a conversation turn; a trigger firing may start the configured handoff."""
        return self.brain.add_turn(self._call(call_id), turn, self._start)

    def escalate(self, call_id: str, reason: str,
                 context: dict[str, Any] | None = None) -> Handoff:
        """Escalate now (an agent or a flow decided), routed and packed as a trigger would be."""
        return self.brain.escalate(self._call(call_id), reason, context, self._start)

    async def reachable(self, destination: str, trunk: str | None = None) -> None:
        """Route and resolve ``destination`` as a call to it would (NoRoute, ResolutionError)."""
        trunks = self.switchboard.trunks
        route = trunks.route_via(trunk, destination) if trunk else trunks.route(destination)
        await self.switchboard.resolver.resolve(route.next_hop)

    def recording(self, call_id: str, action: RecordingAction, announce: bool = True
                  ) -> RecordingPhase | None:
        """Start (after the consent, unless ``announce`` is False because the AI says it
        itself), pause, resume or stop the call's recording; returns its phase now.
        HandoffError for an unknown call, RecordingConflict when the action does not fit."""
        call = self._call(call_id)
        recordings = self.recordings
        match action:
            case RecordingAction.START:
                self.spawn(_drop_result(recordings.start(call, announce)))
            case RecordingAction.PAUSE:
                recordings.pause(call)
            case RecordingAction.RESUME:
                recordings.resume(call)
            case RecordingAction.STOP:
                recordings.stop(call)
        return recordings.phase(call_id)

    def hang_up(self, call: Call, reason: str | None = None) -> None:
        """warmline ends the caller's call (``reason``: a Reason header for the BYE)."""
        self.switchboard.hang_up(call.caller, reason)

    def record(self, call_id: str, kind: str, data: dict[str, Any],
               handoff_id: str | None = None, at: float | None = None) -> None:
        """Journal an event for the records (tens of µs on local disk; see records/store.py).

        Its data is redacted here, whoever wrote it (a safety net: the words came in
        redacted already); the URIs calls are routed by stay as they are.
        """
        at = at if at is not None else time.time()
        clean = redact_value(data, ROUTING_KEYS)
        if self.records is not None:
            self.records.add(Event(at, call_id, kind, clean, handoff_id))
        if self.status_events is not None:
            self.status_events.publish(call_id, kind, clean, handoff_id, at)
        if self.call_events is not None:
            self.call_events.publish(call_id, kind, clean, handoff_id, at)

    def hold_audio(self) -> Samples:
        return self._hold

    def set_hold_audio(self, samples: Samples) -> None:
        """What waiting callers hear (default: ringback); 8 kHz mono, looped."""
        self._hold = whole_frames(samples)

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` in the background; cancelled by :meth:`close`."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def start(self) -> None:
        """Once the SIP listeners are open: end the calls a crashed run left up, register
        the trunks that ask for it, and watch for callers gone silent."""
        if self.shared is None:
            self.switchboard.end_left_over()
        else:
            self._join_the_cluster(self.shared)
        self.registrations.start()
        if self.switchboard.trunks.trunks:
            self.spawn(self._trust_the_trunks())
        if self.watchdog is not None:
            self.spawn(self._watch_for_silence(self.watchdog))
        if self.dialler is not None and self.shared is None:  # else once Redis was asked
            self.dialler.start()
        if self.recordings.settings.retention_days > 0:
            self.spawn(self._sweep_recordings())
        if self._trace_writer is not None and self.trace_keep_days > 0:
            self.spawn(self._sweep_traces(self._trace_writer))
        self.spawn(self._forget_ended_calls())

    async def _forget_ended_calls(self) -> None:
        """Ended calls are let go as new ones arrive, and on this timer too: a node that
        goes quiet does not hold its last calls whole (nor list them) for ever."""
        while True:
            await asyncio.sleep(FORGET_EVERY_SECONDS)
            try:
                self.switchboard.forget_ended_calls()
            except Exception:  # a bug here must not stop the timer
                log.exception("forgetting ended calls failed")

    def _join_the_cluster(self, shared: SharedState) -> None:
        """Share our dialogs (so a live node can take our calls over if we die), take over
        the calls and callback promises of nodes that die, and end what a crashed run of
        ours left up (and dial what it promised) except what another node took over."""
        board = self.switchboard
        board.on_dialog_kept, board.on_dialog_gone = shared.leg_kept, shared.leg_gone
        shared.live_legs = lambda: board.kept_dialogs
        shared.on_orphans = self.inherit
        shared.on_orphan_callbacks = self.inherit_callbacks
        shared.on_taken = board.let_go
        shared.on_taken_callbacks = self._callbacks_taken
        shared.open_promises = self.callback_book.open_ids
        self.spawn(self._end_left_over_not_taken(shared))
        shared.start()

    async def _end_left_over_not_taken(self, shared: SharedState) -> None:
        """Asked once our entry is written again: from then on no heir can take anything
        of ours, so what is not marked taken now stays ours."""
        keys = self.switchboard.left_over_keys()
        promises = {callback_key(ident): ident for ident in self.callback_book.open_ids()}
        taken: dict[str, str] = {}
        if keys or promises:
            try:
                await asyncio.wait_for(shared.registered.wait(), LEFT_OVER_ASK_SECONDS)
                taken = await asyncio.wait_for(shared.taken_of([*keys, *promises]),
                                               LEFT_OVER_ASK_SECONDS)
            except (OSError, TimeoutError) as error:
                log.warning("cluster: cannot ask which of the %d call(s) and %d callback(s) "
                            "the last run left were taken over (%s); ending the calls and "
                            "keeping the callbacks", len(keys), len(promises), error)
        taken = {key: heir for key, heir in taken.items()  # marks naming us: an earlier
                 if heir != shared.node_id}  # run of ours took those; they are ours still
        handed = {promises[key]: heir for key, heir in taken.items() if key in promises}
        dialogs = {key: heir for key, heir in taken.items() if key not in promises}
        if dialogs:
            log.warning("%d dialog(s) the last run left were taken over by another node; "
                        "leaving them to it", len(dialogs))
        self.switchboard.end_left_over(taken=dialogs)
        if handed:
            log.warning("%d callback(s) the last run promised are kept by another node",
                        len(handed))
            self.callback_book.hand_over(handed)
        if self.dialler is not None:
            self.dialler.start()

    def _callbacks_taken(self, heirs: dict[str, str]) -> None:
        """Our promises another node inherited while our beats lapsed: dialled there only."""
        if self.dialler is not None:
            self.dialler.handed_over(list(heirs))
        self.callback_book.hand_over(heirs)

    def inherit_callbacks(self, rows: list[dict[str, Any]]) -> None:
        """Callback promises a dead node made: ours to keep (dialled by our dialler)."""
        for row in rows:
            try:
                callback = self.callback_book.inherit(row, time.time())
            except (TypeError, ValueError, KeyError) as error:
                log.error("cluster: a callback row of node %s is unreadable: %s",
                          row.get("node"), error)
                continue
            self.record(callback.call_id, "callback.taken_over",
                        {"from_node": str(row.get("node"))}, callback.handoff_id)
        if self.dialler is None:
            log.error("cluster: %d callback(s) taken over, but this node has no [callbacks] "
                      "dialler: they are listed, not dialled", len(rows))

    def inherit(self, orphans: list[OrphanCall]) -> None:
        """Calls a dead node left (cluster/takeover.py): each adopted here if it can be."""
        for orphan in orphans:
            self.spawn(self._adopt(orphan))

    async def _adopt(self, orphan: OrphanCall) -> None:
        call = await self.adoption.adopt(orphan)
        if call is None:
            return
        log.warning("call %s taken over from node %s (%s)", call.id, orphan.node,
                    call.state.value, extra={"call_id": call.id})
        self.record(call.id, "call.adopted", {"from_node": orphan.node,
                                              "state": call.state.value})
        if self.shared is not None:
            self.shared.call_changed(call.as_dict())
        call.caller.on_digit = lambda digit: self._caller_pressed(call, digit)
        if call.state is CallState.AI:  # the AI's conversation died with the node
            call.stream_parameters["recovered"] = f"the call was taken over from {orphan.node}"
            self.on_call(call)

    async def _sweep_recordings(self) -> None:
        """Recordings past [recording] retention_days are deleted: at start, then hourly."""
        folder, days = self.recordings.folder, self.recordings.settings.retention_days
        loop = asyncio.get_running_loop()
        while True:
            deleted = await loop.run_in_executor(None, sweep_recordings, folder, days)
            if deleted:
                log.info("%d recording(s) older than %g day(s) deleted", len(deleted), days)
            await asyncio.sleep(RETENTION_SWEEP)

    async def _sweep_traces(self, writer: TraceWriter) -> None:
        """SIP traces past [trace] keep_days are deleted (by the writer's thread): at start,
        then hourly."""
        while True:
            writer.sweep(self.trace_keep_days)
            await asyncio.sleep(RETENTION_SWEEP)

    async def _trust_the_trunks(self) -> None:
        """A trunk's calls come from its addresses: trust them as [sip] trusted would, so
        a carrier configured as a trunk is not refused 403 or rate-limited. Each name is
        resolved as a call to it would be (RFC 3263); one that fails is logged."""
        shell = self.switchboard.shell
        for trunk in self.switchboard.trunks.trunks:
            hops = {trunk.uri, trunk.next_hop}
            for hop in hops:
                try:
                    resolution = await self.switchboard.resolver.resolve(hop)
                except ResolutionError as error:
                    log.warning("trunk %s: %s does not resolve (%s); its calls are trusted only "
                                "from [sip] trusted", trunk.name, hop.bare_host, error.reason)
                    continue
                addresses = sorted({target.host for target in resolution.targets})
                shell.ua.trust(addresses)
                log.info("trunk %s: calls from %s trusted", trunk.name, ", ".join(addresses))

    async def _watch_for_silence(self, watchdog: SilenceWatchdog) -> None:
        interval = min(5.0, watchdog.timeout / 4)
        while True:
            await asyncio.sleep(interval)
            try:
                ended = watchdog.sweep(list(self.calls.values()), self.switchboard.shell.now())
            except Exception:  # a bug here must not stop the watch for the other calls
                log.exception("silence watchdog: sweep failed")
                continue
            for call in ended:
                log.warning("call %s ended: no RTP or RTCP from the caller for %g s", call.id,
                            watchdog.timeout, extra={"call_id": call.id})

    def readiness(self) -> dict[str, bool]:
        """What /readyz checks: a SIP listener is open, the node is not draining, the
        records can be written, the media plane answers (rtpengine's pings), a call could
        get media ports now, and in a cluster whether Redis answers (reported, not required:
        api/health.py). Each cheap: no I/O."""
        records = self.records
        plane = self.switchboard.plane
        checks = {"sip": self.switchboard.shell.listening,
                  "accepting": self.drain.state is DrainState.ACCEPTING,
                  "records": records is None or records.writable,
                  "media_plane": plane.healthy(),
                  "media_ports": plane.spare_legs() > 0}
        if self.shared is not None:
            checks["redis"] = self.shared.available
        return checks

    def live_call_rows(self) -> list[dict[str, Any]]:
        """The calls this node holds that have not ended (the cluster's registry)."""
        return [call.as_dict() for call in self.calls.values() if not call.ended]

    def live_handoff_rows(self) -> list[dict[str, Any]]:
        """The handoffs of the calls in memory or listed, with their screen-pop tokens."""
        return [shared_handoff(handoff) for handoff in self.shown_handoffs.values()]

    def shown_handoff(self, handoff_id: str) -> ShownHandoff | None:
        """A handoff of a call in memory (whole) or still listed (as recorded)."""
        return self.shown_handoffs.get(handoff_id)

    def recent_handoffs(self, limit: int) -> list[ShownHandoff]:
        """The latest ``limit`` handoffs to start, newest first: of the calls in memory or
        listed, then of the last few hundred calls no longer listed (no copy of the whole
        listings)."""
        newest_first: Iterator[ShownHandoff] = itertools.chain(
            reversed(self.shown_handoffs.values()), reversed(self.past_handoffs))
        return list(itertools.islice(newest_first, limit))

    @property
    def trace_writer(self) -> TraceWriter | None:
        """Where ended calls' SIP traces go (None: no SIP trace kept)."""
        return self._trace_writer

    def refusals(self) -> dict[str, int]:
        """Everything refused to protect the engine so far, by reason (for /metrics)."""
        shell = self.switchboard.shell
        counters, streams = shell.ua.counters, shell.connections.refusals
        refused = self.switchboard.refused
        return {"sip_untrusted": counters.refused_untrusted,
                "sip_challenged": counters.challenged,
                "sip_rate_limited": counters.rate_limited,
                "sip_overloaded": counters.overloaded,
                "sip_backlogged": counters.refused_backlogged,
                "calls_over_max": refused[Overload.MAX_CALLS],
                "calls_no_media_ports": refused[Overload.NO_MEDIA_PORTS],
                "tcp_over_source_cap": streams.over_source_cap,
                "tcp_over_total_cap": streams.over_total_cap,
                "tcp_idle": streams.idle,
                "tcp_slow_message": streams.slow_message}

    async def close(self) -> None:
        if self.dialler is not None:
            await self.dialler.close()
        for task in list(self._tasks):
            task.cancel()
        await self.registrations.stop()
        await self.transfers.close()
        await asyncio.sleep(0)  # the events the cancelled work posted: delivered, recorded
        await self.switchboard.close()
        await self.recordings.close()  # every file complete on disk
        for call_id, due in list(self._traces_due.items()):  # ended calls' traces: now
            due.cancel()
            call = self.calls.get(call_id)
            if call is not None:
                self._write_trace(call)
        if self._trace_writer is not None:
            await self._trace_writer.close()
        self.brain.trigger_log.close()
        if self.status_events is not None:  # last: the events of the above go out too
            await self.status_events.close()
        if self.call_events is not None:
            await self.call_events.close()
        if self.shared is not None:
            await self.shared.close()

    # -- the switchboard's observer ------------------------------------------------------
    def call_started(self, call: Call) -> None:
        call.caller.on_digit = lambda digit: self._caller_pressed(call, digit)
        self.record(call.id, "call.started", {"caller": call.caller_uri,
                                              "to": str(call.caller.session.local_party.uri)})
        if self.shared is not None:
            self.shared.call_changed(call.as_dict())
        if self.recordings.settings.mode is RecordingMode.CALL:
            self.spawn(self._record_then_take(call))
        else:
            self.on_call(call)

    async def _record_then_take(self, call: Call) -> None:
        """Mode "call": the caller hears the consent, the recording starts, then the AI
        takes the call (so nothing the AI says cuts the announcement short)."""
        with contextlib.suppress(RecordingConflict):  # the caller left already
            await self.recordings.start(call)
        if not call.ended:
            self.on_call(call)

    def call_ended(self, call: Call, reason: str | None) -> None:
        if call.taken_by is not None:  # it goes on at the heir, which records its end
            self.record(call.id, "call.let_go", {"to_node": call.taken_by})
            self._let_go_handoffs.update(call.handoff_ids)
        else:
            self.record(call.id, "call.ended", {"reason": reason})
        if self.shared is not None and call.taken_by is not None:
            self.shared.call_let_go(call.id)  # its registry entry is the heir's now
        elif self.shared is not None:
            self.shared.call_gone(call.id)
        self.recordings.call_ended(call)
        self.transfers.caller_left(call)
        if self.sip_trace is not None:  # a few seconds on, so the legs' last BYEs are in it
            self._traces_due[call.id] = asyncio.get_running_loop().call_later(
                TRACE_DELAY, self._write_trace, call)

    def _write_trace(self, call: Call) -> None:
        """Every SIP message of the call's legs, stored (records/trace_store.py).
        The words in them were redacted where they came in; each message is redacted again
        here, as log lines are (a PBX's own headers, anything that slipped past), and the
        keys the caller pressed (SIP INFO) are taken out."""
        self._traces_due.pop(call.id, None)
        assert self.sip_trace is not None and self._trace_writer is not None
        call_ids = {leg.session.call_id for leg in call.legs}
        def written(call_id: str) -> None:  # not a later call under the same id (adopted
            if self.calls.get(call_id) is call:  # back): that one's trace is its own
                self._written.add(call_id)

        self._trace_writer.write(call.id, list(call.handoff_ids),
                                 self.sip_trace.take(sorted(call_ids)), written)

    def live_sip_messages(self, wanted: str) -> tuple[str, list[TracedMessage]] | None:
        """The SIP trace so far of a call (or a handoff's call) not yet stored (then
        records.trace_store.find_trace has it), redacted; None otherwise."""
        handoff = self.shown_handoff(wanted)
        call_id = handoff.call_id if handoff is not None else wanted
        pending = self._trace_writer.writing.get(call_id) if self._trace_writer else None
        if pending is not None:  # taken from the tap, not on disk yet (the call may be
            return call_id, cleaned(pending, redact)  # forgotten already)
        call = self.calls.get(call_id)
        if call is None or self.sip_trace is None or call.id in self._written:
            return None
        legs = sorted({leg.session.call_id for leg in call.legs})
        return call.id, cleaned(self.sip_trace.peek(legs), redact)

    def registration_changed(self, registration: Registration) -> None:
        self.registrations.changed(registration)

    def call_forgotten(self, call: Call) -> None:
        due = self._traces_due.pop(call.id, None)
        if due is not None:  # forgotten before its trace was due (its id comes back)
            due.cancel()
            self._write_trace(call)
        self._written.discard(call.id)
        self._callback_calls.pop(call.id, None)
        if self.call_events is not None:
            self.spawn(self.call_events.forget(call.id))
        self.brain.forget(call.id)
        self.transfers.forget(call)
        for handoff_id in call.handoff_ids:  # shown as recorded from now on (in place:
            handoff = self.handoffs.pop(handoff_id, None)  # GET /handoffs keeps its order)
            if handoff is not None:
                self.shown_handoffs[handoff_id] = HandoffRecord.of(handoff)

    def call_unlisted(self, call: EndedCall) -> None:
        """Its handoffs leave the live view with it (GET /handoffs keeps the last few)."""
        for handoff_id in call.handoff_ids:
            handoff = self.shown_handoffs.pop(handoff_id, None)
            if isinstance(handoff, HandoffRecord):  # (recorded when the call was let go)
                self.past_handoffs.append(handoff)

    # -- inside ------------------------------------------------------------------------
    def _start(self, call: Call, handoff: Handoff) -> Handoff:
        handoff.validate()
        self._check_routes(handoff)
        waiting = self._awaiting_consent.get(call.id)
        if waiting is not None:
            raise HandoffError(f"call {call.id} is already being transferred ({waiting})",
                               Problem.CONFLICT)
        self.transfers.check(call)
        self.switchboard.answer(call)  # still ringing with early media: answered first
        if call.caller.session.dialog is None:
            raise HandoffError("the call is still ringing (its 200 waits for the caller's "
                               "PRACK); ask again once it is answered", Problem.CONFLICT)
        self.brain.prepare(call, handoff)
        call.handoff_ids.append(handoff.id)
        self.handoffs[handoff.id] = handoff
        self.shown_handoffs[handoff.id] = handoff
        handoff.listener = self._record_handoff_event
        for earlier in list(handoff.events):  # requested, triggered: before the listener
            self._record_handoff_event(handoff, earlier)
        if self.recordings.settings.mode is RecordingMode.HANDOFF \
                and self.recordings.phase(call.id) is None:
            self._awaiting_consent[call.id] = handoff.id
            self.spawn(self._record_then_transfer(call, handoff))
        else:
            self.transfers.start(call, handoff)
        return handoff

    async def _record_then_transfer(self, call: Call, handoff: Handoff) -> None:
        """Mode "handoff": the consent first, then the recording and the transfer at once,
        so the human's part of the call is kept from its first ring."""
        try:
            with contextlib.suppress(RecordingConflict):  # the caller left already
                await self.recordings.start(call)
        finally:
            self._awaiting_consent.pop(call.id, None)
        if call.ended:
            handoff.finish(HandoffStatus.FAILED, "the caller hung up before the transfer began")
            return
        self.transfers.start(call, handoff)

    def _returned(self, call: Call, why: str, away: float) -> None:
        """Back with the first agent: its next stream's start says so (customParameters:
        the handoff, why, and what another agent reported), then ``on_return``."""
        handoff = self.handoffs.get(call.handoff_ids[-1]) if call.handoff_ids else None
        if handoff is not None:
            attempt = handoff.attempt
            call.stream_parameters = {
                "returned": "true", "returned_handoff_id": handoff.id, "returned_why": why,
                "returned_from": attempt.uri if attempt is not None else "",
                "seconds_away": f"{away:.1f}", "agent_report": handoff.agent_report or ""}
        self.on_return(call, why, away)

    def _check_routes(self, handoff: Handoff) -> None:
        """A tel: destination no trunk serves, or an agent:NAME the config does not name,
        is refused now, naming the field."""
        for index, step in enumerate([handoff.first, *handoff.fallback]):
            if not isinstance(step, Destination):
                continue
            if step.uri.lower().startswith("agent:"):
                name = step.uri.partition(":")[2]
                if not self.agent_streams.known(name):
                    where = "to" if index == 0 else f"fallback[{index - 1}]"
                    raise HandoffError(f"{where}: no agent {name!r} ([agents.{name}] in the "
                                       "config)")
                continue
            for uri in step.uris:  # every member of a ring group
                if is_agent_uri(uri):
                    continue
                try:
                    self.switchboard.trunks.route(uri)
                except NoRoute as error:
                    where = "to" if index == 0 else f"fallback[{index - 1}]"
                    raise HandoffError(f"{where}: {error}") from None

    def _caller_pressed(self, call: Call, digit: str) -> None:
        self.brain.caller_pressed(call, digit, self._start)
        if call.on_dtmf is not None:
            call.on_dtmf(digit)

    def _record_handoff_event(self, handoff: Handoff, event: HandoffEvent) -> None:
        if handoff.id in self._let_go_handoffs:
            return  # its call went on at another node: the handoff's story is told there
        if isinstance(self.shown_handoffs.get(handoff.id), HandoffRecord):
            # a step after its call was let go (a webhook answering late): shown as it is
            self.shown_handoffs[handoff.id] = HandoffRecord.of(handoff)
        self.record(handoff.call_id, f"handoff.{event.kind}", event.detail, handoff.id,
                    event.at)
        self._share(handoff)
        key = self._callback_calls.get(handoff.call_id)
        if key is None or self.dialler is None:
            return
        if event.kind == HandoffStatus.CONNECTED:
            attempt = handoff.attempt
            self.dialler.connected(key, handoff.call_id,
                                   str(event.detail.get("by") or (attempt.uri if attempt
                                                                  else "")))
        elif event.kind in (HandoffStatus.FAILED, HandoffStatus.COMPLETED):
            self.dialler.not_connected(key, handoff.call_id,
                                       f"nobody took the call: {handoff.reason}")

    def _share(self, handoff: Handoff) -> None:
        """Tell the cluster: the handoff (its screen-pop for any node) and its call's state."""
        if self.shared is None:
            return
        self.shared.handoff_changed(shared_handoff(handoff))
        call = self.calls.get(handoff.call_id)
        if call is not None and not call.ended:
            self.shared.call_changed(call.as_dict())

    # -- outbound calls ------------------------------------------------------------------
    def outbound_problem(self, to: str, trunk: str | None = None) -> str | None:
        """Why ``to`` may not be called by :meth:`place_call` (the [outbound] allow-list)."""
        trunks = self.switchboard.trunks
        try:
            route = trunks.route_via(trunk, to) if trunk else trunks.route(to)
            through_trunk = route.trunk is not None
        except (NoRoute, ValueError):
            through_trunk = False  # not callable at all: placing it says why
        return self.outbound.destination_problem(to, through_trunk)

    async def place_call(self, request: OutboundRequest, events_url: str | None = None
                         ) -> Call:
        """Ring ``request.to``; once answered, hand them to the AI, a department or a
        destination. The caller checks :meth:`outbound_problem` first (the API does),
        and ``events_url`` (this call's own status callbacks) against
        ``call_events.problem``. Raises NoRoute, ResolutionError, OSError (no media
        port), OverflowError (max_calls) or ValueError (a URI that cannot be called)."""
        request.caller_id = request.caller_id or self.outbound.caller_id

        def created(call: Call) -> None:
            if events_url is not None:
                self.set_call_events(call, events_url)

        return await place(self.switchboard, request,
                           lambda call_id, kind, data: self.record(call_id, kind, data),
                           self._outbound_answered, created=created)

    def set_call_events(self, call: Call, url: str) -> None:
        """Send ``call``'s status events to ``url`` too (checked by the caller against
        ``call_events.problem``)."""
        assert self.call_events is not None
        self.call_events.set(call.id, url)

    def _outbound_answered(self, call: Call, request: OutboundRequest) -> None:
        """The customer answered: the AI takes them (after the announcement, if any), or a
        handoff to the department or destination starts (its announcement first)."""
        call.caller.on_digit = lambda digit: self._caller_pressed(call, digit)
        if self.recordings.settings.mode is RecordingMode.CALL:  # the consent comes first
            self.spawn(self._record_then_connect(call, request))
        else:
            self._connect(call, request)

    async def _record_then_connect(self, call: Call, request: OutboundRequest) -> None:
        with contextlib.suppress(RecordingConflict):  # the customer hung up already
            await self.recordings.start(call)
        if not call.ended:
            self._connect(call, request)
            return
        key = self._callback_calls.get(call.id)
        if key is not None and self.dialler is not None:
            self.dialler.not_connected(key, call.id, "the customer hung up first")

    def _connect(self, call: Call, request: OutboundRequest) -> None:
        if request.then is Then.AI:
            self.spawn(self._to_the_ai(call, request.announce))
            return
        try:
            if request.then is Then.DEPARTMENT:
                assert request.department is not None
                first, fallback = self.escalation.plan_department(request.department)
            else:
                first, fallback = request.destination, ["ai"]
            self._start(call, Handoff(call.id, first, fallback=list(fallback),
                                      context=dict(request.context),
                                      announce=request.announce))
        except (HandoffError, KeyError) as error:
            log.warning("outbound call %s: cannot connect (%s); the AI takes it", call.id,
                        error, extra={"call_id": call.id})
            self.record(call.id, "call.connect_failed", {"reason": str(error)})
            self.spawn(self._to_the_ai(call, None))

    async def _to_the_ai(self, call: Call, announce: str | None) -> None:
        if announce:
            await self._say(call, announce)
        key = self._callback_calls.get(call.id)
        if call.ended:
            if key is not None and self.dialler is not None:
                self.dialler.not_connected(key, call.id, "the customer hung up first")
            return
        if key is not None and self.dialler is not None:
            self.dialler.connected(key, call.id, "ai")
        self.on_call(call)

    async def _say(self, call: Call, text: str) -> None:
        """``text`` to the customer, played out (nothing when TTS fails: logged)."""
        try:
            audio = await asyncio.get_running_loop().run_in_executor(
                None, self.tts.synthesize, text)
        except TtsError as error:
            log.warning("call %s: announcement not said: %s", call.id, error)
            return
        if call.ended:
            return
        await call.caller.media.play(Player(audio)).done

    # -- the callback dialler ------------------------------------------------------------
    def _callback_problem(self, number: str) -> str | None:
        return self.outbound_problem(number)

    async def _place_callback(self, callback: ScheduledCallback,
                              progress: CallbackProgress) -> str:
        """Ring the customer of ``callback``: the announcement, then the department its
        intent routes to (or the AI when there are no departments or escalation target)."""
        assert self.dialler is not None
        dialler, settings = self.dialler, self.dialler.settings
        context = {"intent": callback.intent, "callback_for": callback.handoff_id,
                   "summary": f"Callback promised to {callback.number}"
                              + (f" about {callback.intent}" if callback.intent else "")}
        then, department = Then.AI, None
        router = self.escalation.router
        if router is not None:
            department = router.route(callback.intent, set(), _utc_now()).department.name
            then = Then.DEPARTMENT
        elif self.escalation.destination is not None:
            then = Then.DESTINATION
        request = OutboundRequest(callback.number, then, department=department,
                                  destination=self.escalation.destination,
                                  context={k: v for k, v in context.items() if v},
                                  announce=settings.announcement(callback),
                                  ring_timeout=settings.ring_timeout)

        def dial_ended(call: Call, outcome: DialOutcome, status: int | None) -> None:
            dialler.dial_ended(progress.key, call.id, outcome, status)

        request.caller_id = self.outbound.caller_id
        call = await place(self.switchboard, request,
                           lambda call_id, kind, data: self.record(call_id, kind, data),
                           self._outbound_answered, dial_ended)
        self._callback_calls[call.id] = progress.key
        return call.id

    def _call(self, call_id: str) -> Call:
        call = self.calls.get(call_id)
        if call is None:
            if call_id in self.ended_calls:
                raise HandoffError(f"call {call_id} has ended", Problem.CONFLICT)
            raise HandoffError(f"no call {call_id}", Problem.UNKNOWN_CALL)
        return call


def shared_handoff(handoff: ShownHandoff) -> dict[str, Any]:
    """A handoff as the other nodes serve it: GET /handoffs/{id}, and its token, which
    opens its screen-pop there."""
    return {**handoff.as_dict(), "token": handoff.token}


def _utc_now() -> datetime:
    return datetime.now(UTC)

async def _drop_result(work: Coroutine[Any, Any, bool]) -> None:
    await work
