"""The :class:`CallControl` of a real call: the switchboard, the media plane, the event loop.

This is the transfer layer's thin shell, as transport/ is the SIP core's:
it turns what a step asks into SIP requests (through the switchboard),
media operations and background work (TTS, webhooks, probes), and turns
what comes back into transfer events. Every event is delivered on its own
turn of the loop (``call_soon``), never from inside a request a step is
making, so a step never sees an event re-entrantly; their order is kept.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from warmline.calls.call import Call, CallState
from warmline.calls.leg import CallLeg
from warmline.calls.switchboard import Switchboard
from warmline.calls.trunks import NoRoute
from warmline.cluster.limits import (
    ConcurrencyLimits,
    Hold,
    LimitTable,
    LocalLimits,
    destination_key,
)
from warmline.media.plane import MediaMix
from warmline.media.player import Player, Samples, ringback, save_wav
from warmline.media.sdp import SdpError
from warmline.media.tts import TextToSpeech, TtsError
from warmline.sip.errors import SipParseError
from warmline.sip.headers import NameAddr, Replaces
from warmline.sip.session import (
    CallAnswered,
    CallEnded,
    CallFailed,
    CallProgress,
    ReferNotify,
    ReferResponse,
    SessionEvent,
)
from warmline.transfer.callbacks import CallbackBook, ScheduledCallback
from warmline.transfer.control import (
    AgentFailed,
    AgentId,
    CallerFacts,
    CallerHungUp,
    DigitPressed,
    LegAnswered,
    LegEnded,
    LegFailed,
    LegId,
    LegProgress,
    PlaybackEnded,
    PlaybackId,
    ProbeAnswered,
    ReferAnswered,
    ReferId,
    ReferNotified,
    SpeechReady,
    SpeechStarted,
    TimerFired,
    TransferEvent,
    WebhookDone,
    WebhookKind,
)
from warmline.transfer.handoff import Handoff
from warmline.transfer.identity import Identity, with_uri_header
from warmline.transport.resolver import ResolutionError

log = logging.getLogger("warmline.transfer")
CALLER = LegId(0)
PROBE_SECONDS = 2.0  # how long an OPTIONS availability probe may take

WebhookSender = Callable[[Handoff, WebhookKind], Awaitable[bool]]  # -> delivered


class AgentLinks(Protocol):
    """Opens the streams to the agents calls are handed to (agents/handoff.py: the socket
    work is above this layer). It reports with ``report``, from the event loop."""

    def open(self, call: Call, target: str, parameters: dict[str, str], agent: AgentId,
             report: Callable[[TransferEvent], None]) -> None: ...

    def close(self, call: Call, agent: AgentId) -> None: ...


@dataclass
class TransferServices:
    """What every live control shares: speech, audio, the desk's webhook, where files go."""

    tts: TextToSpeech
    hold_audio: Callable[[], Samples]
    deliver: WebhookSender
    records_dir: Path
    callbacks: CallbackBook
    probe_seconds: float = PROBE_SECONDS
    agents: AgentLinks | None = None  # None: a handoff to another agent fails at once
    # calls at once per destination and trunk (cluster/limits.py); none by default
    limits: ConcurrencyLimits = field(default_factory=LocalLimits)
    limit_table: LimitTable = field(default_factory=LimitTable)


class LiveCallControl:
    """:class:`CallControl` over ``call`` on ``switchboard``; events go to ``sink``."""

    def __init__(self, switchboard: Switchboard, call: Call, services: TransferServices
                 ) -> None:
        self.switchboard = switchboard
        self.call = call
        self.services = services
        self.sink: Callable[[TransferEvent], None] | None = None
        self.loop = asyncio.get_running_loop()
        self._legs: dict[LegId, CallLeg] = {CALLER: call.caller}  # kept after they end
        self._leg_ids = (LegId(n) for n in itertools.count(1))
        self._abandoned: set[LegId] = set()  # hung up or cancelled by a step
        self._refer_ids = (ReferId(n) for n in itertools.count(1))
        self._playback_ids = (PlaybackId(n) for n in itertools.count(1))
        self._agent_ids = (AgentId(n) for n in itertools.count(1))
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False  # the engine is shutting down
        self._mix: MediaMix | None = None
        self._mix_legs: set[LegId] = set()  # the legs in the three-way mix
        self._caller_digits: Callable[[str], None] | None = None  # the AI's, while bridged
        self._recordings: dict[LegId, list[Samples]] = {}
        self._holds: dict[LegId, list[Hold]] = {}  # the limits a dialled leg holds
        self._releases: set[asyncio.Task[None]] = set()  # never cancelled: awaited at close

    # -- the call ------------------------------------------------------------------
    @property
    def caller(self) -> LegId:
        return CALLER

    @property
    def caller_facts(self) -> CallerFacts:
        session = self.call.caller.session
        invite = session.invite
        allowed = _tokens(lambda: invite.allow)
        party = session.remote_party
        return CallerFacts(allows_refer=("REFER" in {m.upper() for m in allowed})
                           if allowed else None,
                           supports_replaces="replaces" in _tokens(lambda: invite.supported),
                           number=str(party.uri),
                           party=str(NameAddr(party.uri, party.display_name)),  # no From tag
                           asserted=self.call.asserted_identity, dialled=str(invite.uri),
                           identity=tuple(invite.values("identity")),
                           privacy=invite.get("privacy"))

    @property
    def caller_gone(self) -> bool:
        return self.call.ended

    def set_state(self, state: CallState) -> None:
        if not self.call.ended:
            self.call.state = state

    def release(self) -> None:
        """The call is forgotten: no more events, and no hold on the legs it dialled."""
        self.sink = None
        self._legs.clear()
        self._caller_digits = None

    def caller_hung_up(self) -> None:
        """The switchboard saw the caller's leg end."""
        self._post(CallerHungUp())

    # -- timers ----------------------------------------------------------------------
    def set_timer(self, key: str, seconds: float) -> None:
        self.cancel_timer(key)
        if self._closed:
            return
        self._timers[key] = self.loop.call_later(seconds, self._timer_fired, key)

    def cancel_timer(self, key: str) -> None:
        handle = self._timers.pop(key, None)
        if handle is not None:
            handle.cancel()

    def _timer_fired(self, key: str) -> None:
        self._timers.pop(key, None)
        self._deliver(TimerFired(key))

    # -- signalling ------------------------------------------------------------------
    def dial(self, uri: str, identity: Identity, headers: list[tuple[str, str]]) -> LegId:
        leg_id = next(self._leg_ids)
        self._spawn(self._dial(leg_id, uri, identity, headers))
        return leg_id

    async def _dial(self, leg_id: LegId, uri: str, identity: Identity,
                    headers: list[tuple[str, str]]) -> None:
        def heard(event: SessionEvent) -> None:
            self._leg_event(leg_id, event)

        if not await self._hold_limits(leg_id, uri):
            return
        try:
            leg = await self.switchboard.dial(self.call, uri, identity.from_,
                                              [*headers, *identity.headers], heard)
        except ResolutionError as error:
            self._release_limits(leg_id)
            self._post(LegFailed(leg_id, None, str(error), unresolved=error.name))
            return
        except (OSError, ValueError) as error:  # no media port; a URI nothing can call
            self._release_limits(leg_id)
            self._post(LegFailed(leg_id, None, str(error)))
            return
        self._legs[leg_id] = leg
        if leg_id in self._abandoned:  # given up while the media leg was opening
            self.switchboard.hang_up(leg)

    async def _hold_limits(self, leg_id: LegId, uri: str) -> bool:
        """Take the destination's and the trunk's limits for ``leg_id`` (none configured:
        nothing to take). At a limit the leg fails as busy (486; 503 for a trunk), so the
        attempt moves on to its next destination or fallback; False then, or when the
        step gave the leg up meanwhile."""
        table = self.services.limit_table
        if not table.any:
            return True
        wanted = [(destination_key(uri), table.for_destination(uri), 486, "destination")]
        trunk = self._trunk_of(uri)
        if trunk is not None:
            wanted.append((f"trunk:{trunk}", table.for_trunk(trunk), 503, "trunk"))
        holds = self._holds.setdefault(leg_id, [])
        for key, limit, status, what in wanted:
            if limit <= 0:
                continue
            hold = await self.services.limits.acquire(key, limit)
            if hold is None:
                self._release_limits(leg_id)
                words = "Busy Here" if status == 486 else "Service Unavailable"
                self._post(LegFailed(leg_id, status, f"{words}: the {what} has its {limit} "
                                                     "call(s) already"))
                return False
            holds.append(hold)
        if leg_id in self._abandoned:  # given up while the holds were taken
            self._release_limits(leg_id)
            return False
        return True

    def _trunk_of(self, uri: str) -> str | None:
        try:
            route = self.switchboard.trunks.route(uri)
        except (NoRoute, ValueError):
            return None
        return route.trunk.name if route.trunk is not None else None

    def _release_limits(self, leg_id: LegId) -> None:
        """The leg failed or ended: the destination may be offered the next call."""
        for hold in self._holds.pop(leg_id, []):
            self._keep(self.services.limits.release(hold))

    def _leg_event(self, leg_id: LegId, event: SessionEvent) -> None:
        leg = self._legs.get(leg_id)
        if isinstance(event, CallProgress):
            self._post(LegProgress(leg_id, event.response.status))
        elif isinstance(event, CallAnswered) and leg is not None:
            if leg_id in self._abandoned:  # a 200 that crossed our CANCEL: not wanted
                self.switchboard.hang_up(leg)
                return
            self._post(LegAnswered(leg_id, event.response.status,
                                   _answer_problem(leg, event.response.body)))
        elif isinstance(event, CallFailed):
            self._leave_mix(leg_id)
            self._release_limits(leg_id)
            self._post(LegFailed(leg_id, event.status, event.reason))
        elif isinstance(event, CallEnded):
            self._leave_mix(leg_id)
            self._release_limits(leg_id)
            self._post(LegEnded(leg_id))

    def cancel(self, leg: LegId, reason: str | None = None) -> None:
        self.hang_up(leg, reason)  # the UA CANCELs before an answer and BYEs after one

    def hang_up(self, leg: LegId, reason: str | None = None) -> None:
        if leg == CALLER:
            self.switchboard.hang_up(self.call.caller, reason)
            return
        self._abandoned.add(leg)
        self._leave_mix(leg)
        call_leg = self._legs.get(leg)
        if call_leg is None:
            return  # still opening (see _dial), or over
        if not call_leg.session.ended:
            self.switchboard.hang_up(call_leg, reason)
        call_leg.media.close()

    def refer(self, leg: LegId, target: str, headers: list[tuple[str, str]]) -> ReferId:
        refer_id = next(self._refer_ids)

        def heard(event: ReferResponse | ReferNotify) -> None:
            if isinstance(event, ReferResponse):
                self._post(ReferAnswered(refer_id, event.status, event.subscribed))
            else:
                self._post(ReferNotified(refer_id, event.status, event.final))

        self.switchboard.refer(self._legs[leg], f"<{target}>", headers, heard)
        return refer_id

    def replaces_target(self, leg: LegId) -> str:
        dialog = self._legs[leg].session.dialog
        assert dialog is not None, "Replaces names an established dialog"
        replaces = Replaces(dialog.call_id, dialog.remote_tag, dialog.local_tag)
        return with_uri_header(str(dialog.remote_target), "Replaces", str(replaces))

    def probe(self, uri: str) -> None:
        async def probing() -> None:
            try:
                status = await self.switchboard.probe(uri, self.services.probe_seconds)
            except ResolutionError as error:
                self._post(ProbeAnswered(uri, 0, error.name, str(error)))
                return
            except ValueError as error:  # no trunk for a tel: number
                self._post(ProbeAnswered(uri, 0, reason=str(error)))
                return
            self._post(ProbeAnswered(uri, status))

        self._spawn(probing())

    def deliver_webhook(self, handoff: Handoff, kind: WebhookKind) -> None:
        async def delivering() -> None:
            delivered = await self.services.deliver(handoff, kind)
            self._post(WebhookDone(kind, delivered))

        self._spawn(delivering())

    def connect_agent(self, target: str, parameters: dict[str, str]) -> AgentId:
        agent = next(self._agent_ids)
        links = self.services.agents
        if links is None or self._closed:
            self._post(AgentFailed(agent, "this engine streams to no other agent"))
        else:
            links.open(self.call, target, parameters, agent, self._post)
        return agent

    def disconnect_agent(self, agent: AgentId) -> None:
        if self.services.agents is not None:
            self.services.agents.close(self.call, agent)

    # -- media -----------------------------------------------------------------------
    def play_hold(self, leg: LegId) -> None:
        self._legs[leg].media.play(Player(self.services.hold_audio(), loop=True))

    def play_ringback(self, leg: LegId) -> None:
        self._legs[leg].media.play(Player(ringback(), loop=True))

    def play(self, leg: LegId, audio: Samples) -> PlaybackId:
        playback = next(self._playback_ids)
        feed = self._legs[leg].media.play(Player(audio))
        feed.done.add_done_callback(lambda _: self._post(PlaybackEnded(playback)))
        return playback

    def synthesize(self, key: str, text: str) -> None:
        async def speaking() -> None:
            try:
                audio = await self.loop.run_in_executor(None, self.services.tts.synthesize,
                                                        text)
            except TtsError as error:
                self._post(SpeechReady(key, None, str(error)))
                return
            self._post(SpeechReady(key, audio))

        self._spawn(speaking())

    def bridge(self, caller: LegId, human: LegId) -> None:
        caller_leg, human_leg = self._legs[caller], self._legs[human]
        self._caller_digits = caller_leg.on_digit
        caller_leg.on_digit = None  # digits now go to the human (and the pair may go compiled)
        caller_leg.media.route_to(human_leg.media)
        human_leg.media.route_to(caller_leg.media)  # hold audio until the human's audio flows
        self._close_mix()  # routed to each other, they have left any mix

    def three_way(self, caller: LegId, human: LegId, introduction: Samples | None
                  ) -> PlaybackId | None:
        mix = self._mix = self.switchboard.plane.open_mix()
        self._mix_legs = {caller, human}
        for leg in (caller, human):
            media = self._legs[leg].media
            media.route_to(None)
            mix.join(media)
        if introduction is None:
            return None
        playback = next(self._playback_ids)
        mix.speak(Player(introduction)).add_done_callback(
            lambda _: self._post(PlaybackEnded(playback)))
        return playback

    def detach(self, leg: LegId) -> None:
        call_leg = self._legs[leg]
        self._close_mix()
        call_leg.media.route_to(None)
        call_leg.media.silence()
        if leg == CALLER and self._caller_digits is not None:
            call_leg.on_digit, self._caller_digits = self._caller_digits, None

    def watch_digits(self, leg: LegId, watch: bool) -> None:
        call_leg = self._legs.get(leg)
        if call_leg is None:
            return
        call_leg.on_digit = (lambda digit: self._post(DigitPressed(leg, digit))) if watch \
            else None

    def detect_speech(self, leg: LegId) -> None:
        self._legs[leg].media.detect_first_word(lambda at: self._post(SpeechStarted(leg)))

    def start_recording(self, leg: LegId) -> None:
        frames = self._recordings[leg] = []
        media = self._legs[leg].media
        media.silence()
        media.record(frames.append)

    def save_recording(self, leg: LegId, name: str) -> tuple[str, float]:
        self._legs[leg].media.record(None)
        path = self.services.records_dir / "voicemail" / f"{name}.wav"
        seconds = save_wav(path, self._recordings.pop(leg, []))
        return str(path), seconds

    def save_callback(self, handoff: Handoff, at: float) -> None:
        self.services.callbacks.add(ScheduledCallback(
            handoff.id, self.call.id, self.call.caller_uri, at, handoff.reason or "",
            _intent(handoff)))

    # -- plumbing --------------------------------------------------------------------
    async def close(self) -> None:
        """Stop for good (the engine is shutting down): no timer fires, no new work starts,
        the work under way is cancelled and awaited, so that whatever it records reaches
        the records before they close, not after."""
        self._closed = True
        for key in list(self._timers):
            self.cancel_timer(key)
        for leg_id in list(self._holds):
            for hold in self._holds.pop(leg_id):
                await self.services.limits.release(hold)
        await asyncio.gather(*self._releases, return_exceptions=True)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _post(self, event: TransferEvent) -> None:
        self.loop.call_soon(self._deliver, event)

    def _deliver(self, event: TransferEvent) -> None:
        if self.sink is not None:
            self.sink(event)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        if self._closed:  # shutting down: what it would do (a prompt, a dial) is moot
            work.close()
            return
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _keep(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` even while shutting down: :meth:`close` awaits it instead of
        cancelling it (a release must not be lost)."""
        task = asyncio.ensure_future(work)
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    def _close_mix(self) -> None:
        mix, self._mix = self._mix, None
        self._mix_legs = set()
        if mix is not None:
            mix.close()

    def _leave_mix(self, leg: LegId) -> None:
        """A leg ended: the three-way mix closes if it was in it. Another leg (a member
        of a ring group that lost the race, cancelled) leaves the mix alone."""
        if leg in self._mix_legs:
            self._close_mix()


def _tokens(read: Callable[[], list[str]]) -> list[str]:
    """Allow/Supported tokens; none when the header is unreadable (treated as absent)."""
    try:
        return read()
    except SipParseError:
        return []


def _intent(handoff: Handoff) -> str | None:
    """What the caller wanted, from the packet (or the request's context)."""
    packet_intent = ((handoff.packet or {}).get("intent") or {})
    name = packet_intent.get("name") if isinstance(packet_intent, dict) else None
    name = name or handoff.context.get("intent")
    return str(name)[:100] if isinstance(name, str) and name.strip() else None


def _answer_problem(leg: CallLeg, sdp: bytes) -> str | None:
    """Apply the human's SDP answer to the leg; why it is unusable, or None."""
    try:
        leg.negotiation.accept(sdp)
    except SdpError as error:
        return error.reason
    return None
