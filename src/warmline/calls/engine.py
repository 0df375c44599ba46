"""The call engine: SIP session events in, calls with media legs out, transfers run.

It sits between the shell (which owns the sockets and runs the sans-IO UA)
and whoever drives the calls: an agent answering them and asking for
handoffs. An inbound INVITE gets a relay leg and an SDP answer from
that leg's negotiation (488 with a Warning when nothing fits); every
re-INVITE or UPDATE is answered by the leg; INFO DTMF reaches the call's
digit handler; a hang-up closes the leg so no RTP socket outlives its call.

A handoff runs as a chain of attempts (transfer.py): the first destination,
then each fallback in turn, and back to the AI when none is left, so no
path ends with the caller dropped. One handoff at a time per call: a second
request while one runs is refused (409).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warmline.brain.calibration import TriggerLog
from warmline.brain.delivery import send_webhook, sip_headers
from warmline.brain.escalation import Conversation, EscalationPolicy, turn_skills
from warmline.brain.triggers import Firing
from warmline.brain.turns import Turn
from warmline.calls.consult import AttendedAttempt, WarmAttempt
from warmline.calls.fallbacks import ScheduledCallback, callback, say, voicemail
from warmline.calls.handoff import (
    Destination,
    FallbackAction,
    Handoff,
    HandoffError,
    HandoffEvent,
)
from warmline.calls.leg import CallLeg, quoted
from warmline.calls.transfer import Attempt, BlindAttempt, BridgeAttempt, ReferWatcher
from warmline.media.dtmf import DtmfError, parse_dtmf_relay
from warmline.media.negotiation import Negotiation
from warmline.media.player import Samples, ringback
from warmline.media.relay import EmbeddedRelay
from warmline.media.sdp import SdpError
from warmline.media.tts import EspeakTts, TextToSpeech
from warmline.records.store import Event, RecordWriter
from warmline.sip.session import (
    CallAnswered,
    CallEnded,
    CallFailed,
    CallProgress,
    IncomingCall,
    ProbeResult,
    ReferNotify,
    ReferResponse,
    ReferSubscription,
    RequestInDialog,
    Session,
    SessionEvent,
)
from warmline.transport.shell import SipShell

log = logging.getLogger("warmline.calls")
RETAIN_SECONDS = 3600.0
PROBE_SECONDS = 2.0  # how long an OPTIONS availability probe may take
RETURN_ANNOUNCEMENT = "I am sorry, nobody could take your call right now. I am back with you."
_ids = itertools.count(1)


@dataclass(eq=False)
class Call:
    """A caller's call as warmline holds it: the caller's leg and what became of it."""

    id: str
    caller: CallLeg
    started_at: float
    state: str = "ai"  # ai -> transferring -> human -> ended (or back to ai)
    on_dtmf: Callable[[str], None] | None = None
    legs: list[CallLeg] = field(default_factory=list)  # every leg, the caller's first
    handoffs: list[Handoff] = field(default_factory=list)
    attempt: Attempt | None = None  # the transfer attempt running or the bridge in place
    ended_at: float | None = None
    conversation: Conversation = field(default_factory=Conversation)  # the AI's turns

    @property
    def ended(self) -> bool:
        return self.state == "ended"

    @property
    def handoff(self) -> Handoff | None:
        """The handoff in progress, if any."""
        last = self.handoffs[-1] if self.handoffs else None
        return last if last is not None and not last.ended else None

    def as_dict(self) -> dict[str, Any]:
        session = self.caller.session
        return {"id": self.id, "from": str(session.remote_party.uri),
                "to": str(session.local_party.uri), "state": self.state,
                "started_at": self.started_at,
                "handoffs": [handoff.id for handoff in self.handoffs]}


@dataclass(frozen=True)
class TurnResult:
    fired: list[Firing]
    handoff: Handoff | None  # started by this turn's firing


CallHandler = Callable[[Call], None]
ReturnHandler = Callable[[Call, str, float], None]  # call, why, seconds away
ATTEMPTS: dict[str, type[Attempt]] = {"blind": BlindAttempt, "bridge": BridgeAttempt,
                                       "warm": WarmAttempt, "attended": AttendedAttempt}


class CallEngine:
    """Answers inbound calls on ``relay`` and keeps their legs' media in step with SIP."""

    def __init__(self, shell: SipShell, relay: EmbeddedRelay, media_address: str,
                 codecs: list[str], on_call: CallHandler | None = None,
                 on_return: ReturnHandler | None = None,
                 records_dir: Path = Path("warmline-records")) -> None:
        self.shell = shell
        self.relay = relay
        self.media_address = media_address
        self.codecs = codecs
        self.on_call = on_call or (lambda call: None)
        self.on_return = on_return or (lambda call, why, away: None)
        self.records_dir = records_dir  # voicemail recordings, scheduled callbacks
        self.calls: dict[str, Call] = {}
        self.handoffs: dict[str, Handoff] = {}
        self.callbacks: list[ScheduledCallback] = []
        self._legs: dict[str, CallLeg] = {}  # by session id
        self._outbound: dict[str, BridgeAttempt] = {}  # by session id
        self._refers: dict[int, ReferWatcher] = {}  # by id() of the subscription
        self._tasks: set[asyncio.Task[None]] = set()
        self._digit_watchers: dict[str, Callable[[str], None]] = {}  # by session id
        self._probes: dict[int, asyncio.Future[int]] = {}  # by id() of the probe
        self.escalation = EscalationPolicy()  # what a trigger leads to, how context travels
        self.trigger_log = TriggerLog(records_dir)  # for `warmline triggers report`
        self.records: RecordWriter | None = None  # the durable event log, when configured
        self._hold = ringback()
        self.tts: TextToSpeech = EspeakTts()
        # said to a caller coming back to the AI after a failed transfer (None: nothing)
        self.return_announcement: str | None = RETURN_ANNOUNCEMENT
        shell.on_event = self.on_event

    def on_event(self, event: SessionEvent) -> None:
        if isinstance(event, IncomingCall):
            self.spawn(self._answer(event.session))
        elif isinstance(event, RequestInDialog):
            self._in_dialog(event)
        elif isinstance(event, ReferResponse | ReferNotify):
            self._refer_event(event)
        elif isinstance(event, ProbeResult):
            waiter = self._probes.pop(id(event.probe), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(event.status)
        elif event.session.id in self._outbound:
            self._outbound_event(event)
        elif isinstance(event, CallEnded | CallFailed):
            self._ended(event.session)

    # ------------------------------------------------------------------ transfers
    def transfer(self, call_id: str, handoff: Handoff) -> Handoff:
        """Start ``handoff`` on the call; HandoffError (404, 409, 413, 422) when it cannot.

        This is the in-process Python API too: an AI app holding the engine
        calls it with a :class:`Handoff` and gets the same checks as HTTP.
        """
        handoff.validate()
        call = self._call(call_id)
        if call.ended:
            raise HandoffError(f"call {call_id} has ended", 409)
        if call.handoff is not None:
            raise HandoffError(f"call {call_id} is already being transferred "
                               f"({call.handoff.id})", 409)
        if call.state == "human":
            raise HandoffError(f"call {call_id} is with a human already", 409)
        if handoff.packet is None:
            handoff.packet = call.conversation.packet(call.id, _caller_number(call),
                                                      self.escalation)
        if self.escalation.public_url:
            handoff.screen_pop = (f"{self.escalation.public_url}/handoffs/{handoff.id}"
                                  f"?token={handoff.token}")
        call.handoffs.append(handoff)
        self.handoffs[handoff.id] = handoff
        handoff.on_finish = self._handoff_finished
        handoff.listener = self._record_handoff_event
        for earlier in list(handoff.events):  # requested, triggered: before the listener
            self._record_handoff_event(handoff, earlier)
        call.state = "transferring"
        if handoff.announce:
            self.spawn(self._announce_then_start(call, handoff))
        else:
            self._start(call, handoff)
        return handoff

    async def _announce_then_start(self, call: Call, handoff: Handoff) -> None:
        """Tell the caller what happens next ("connecting you to billing"), then do it."""
        await say(self, call, handoff.announce or "")
        handoff.emit("announced", text=handoff.announce)
        if not call.ended:
            self._start(call, handoff)
        elif not handoff.ended:
            handoff.finish("failed", "caller hung up")

    def _start(self, call: Call, handoff: Handoff) -> None:
        if handoff.first is None:
            handoff.reason = handoff.reason or "no destination open"
            self._next_step(call, handoff)
        else:
            self._try(call, handoff, handoff.first)

    def add_turn(self, call_id: str, turn: Turn) -> TurnResult:
        """Record a conversation turn; a trigger firing may start the configured handoff."""
        call = self._call(call_id)
        if call.ended:
            raise HandoffError(f"call {call_id} has ended", 409)
        previous = call.conversation.turns[-1].intent if call.conversation.turns else None
        fired = call.conversation.add(turn, self.escalation.triggers)
        if turn.intent and turn.intent != previous:
            self.record(call.id, "call.intent", {"intent": turn.intent,
                                                 "confidence": turn.confidence})
        for firing in fired:
            log.info("call %s: trigger %s fired on turn %d: %s", call.id, firing.trigger,
                     firing.turn, firing.evidence, extra={"call_id": call.id})
            self.trigger_log.firing(call.id, firing)
        policy = self.escalation
        if not fired or call.state != "ai" or call.handoff is not None or \
                (policy.destination is None and policy.router is None):
            return TurnResult(fired, None)
        return TurnResult(fired, self._escalate(call, fired[0]))

    def escalate(self, call_id: str, reason: str,
                 context: dict[str, Any] | None = None) -> Handoff:
        """Escalate now (an agent or a flow decided), routed and packed as a trigger would be."""
        call = self._call(call_id)
        policy = self.escalation
        if policy.destination is None and policy.router is None:
            raise HandoffError("escalation: no destination or departments configured", 409)
        firing = Firing("requested", {"reason": reason}, len(call.conversation.turns))
        return self._escalate(call, firing, context)

    def _escalate(self, call: Call, firing: Firing,
                  context: dict[str, Any] | None = None) -> Handoff:
        policy = self.escalation
        packet = call.conversation.packet(call.id, _caller_number(call), policy, firing)
        first, fallback = policy.plan(packet["intent"]["name"], turn_skills(call.conversation))
        handoff = Handoff(call.id, first, fallback=fallback, packet=packet,
                          context=context or {})
        handoff.emit("triggered", trigger=firing.trigger, evidence=packet["trigger"])
        return self.transfer(call.id, handoff)

    async def probe(self, uri: str, timeout: float = PROBE_SECONDS) -> int:
        """OPTIONS ``uri``: its final status, or 408 when nothing answers within ``timeout``."""
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        probe = self.shell.run(lambda now: self.shell.ua.probe(uri, now))
        self._probes[id(probe)] = waiter
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return 408
        finally:
            self._probes.pop(id(probe), None)

    def context_headers(self, handoff: Handoff) -> list[tuple[str, str]]:
        """What the INVITE to the human carries of the context, within the header budget."""
        if handoff.packet is None:
            return [("X-Warmline-Handoff", handoff.id)]
        return sip_headers(handoff.packet, handoff.id, handoff.screen_pop,
                           self.escalation.budget)

    async def deliver_webhook(self, handoff: Handoff, kind: str = "webhook") -> None:
        """POST the packet to the desktop/CRM once, before the phone rings; never blocks long.

        ``kind`` "ticket": the same POST opens a ticket when nobody can be reached.
        """
        policy = self.escalation
        if not policy.webhook_url or handoff.packet is None or \
                (kind == "webhook" and handoff.webhook_sent):
            return
        handoff.webhook_sent = True
        result = await send_webhook(policy.webhook_url, policy.webhook_secret,
                                    {**handoff.packet, "type": kind, "handoff_id": handoff.id,
                                     "screen_pop": handoff.screen_pop},
                                    policy.webhook_timeout)
        handoff.emit(f"{kind}_delivered" if result.ok else f"{kind}_failed",
                     status=result.status, detail=result.detail,
                     seconds=round(result.seconds, 3))

    def record(self, call_id: str, kind: str, data: dict[str, Any],
               handoff_id: str | None = None, at: float | None = None) -> None:
        """Queue an event for the records (never blocks the call; see records/store.py)."""
        if self.records is not None:
            self.records.add(Event(at if at is not None else time.time(), call_id, kind, data,
                                   handoff_id))

    def _handoff_finished(self, handoff: Handoff) -> None:
        log.info("handoff %s of call %s %s: %s (SIP %s)", handoff.id, handoff.call_id,
                 handoff.status, handoff.reason, handoff.sip_status,
                 extra={"call_id": handoff.call_id, "handoff_id": handoff.id})
        self.trigger_log.outcome(handoff)

    def _record_handoff_event(self, handoff: Handoff, event: HandoffEvent) -> None:
        self.record(handoff.call_id, f"handoff.{event.kind}", event.detail, handoff.id,
                    event.at)

    def _call(self, call_id: str) -> Call:
        call = self.calls.get(call_id)
        if call is None:
            raise HandoffError(f"no call {call_id}", 404)
        return call

    def hold_audio(self) -> Samples:
        return self._hold

    def set_hold_audio(self, samples: Samples) -> None:
        """What waiting callers hear (default: ringback); 8 kHz mono, looped."""
        self._hold = samples

    def watch_refer(self, refer: ReferSubscription, attempt: ReferWatcher) -> None:
        self._refers[id(refer)] = attempt

    def unwatch_refer(self, refer: ReferSubscription) -> None:
        self._refers.pop(id(refer), None)

    def watch_digits(self, session: Session, callback: Callable[[str], None]) -> None:
        """SIP INFO digits (application/dtmf-relay) on ``session`` go to ``callback``."""
        self._digit_watchers[session.id] = callback

    def watch_session(self, session: Session, attempt: BridgeAttempt) -> None:
        self._outbound[session.id] = attempt
        if attempt.human is not None:
            self._legs[session.id] = attempt.human

    def human_left(self, call: Call, attempt: BridgeAttempt) -> None:
        """The human hung up: the call ends (final) or the caller goes back to the AI."""
        handoff = attempt.handoff
        if attempt.human is not None:
            attempt.human.close()
        if call.ended:
            return
        if handoff.final:
            handoff.finish("completed", "the human hung up")
            session = call.caller.session
            self.shell.run(lambda now: self.shell.ua.bye(session, now))
            return
        away = time.time() - handoff.events[0].at
        self._back_to_ai(call, "the human hung up", away)

    def _try(self, call: Call, handoff: Handoff, destination: Destination) -> None:
        handoff.attempt = destination
        attempt = ATTEMPTS[destination.mode](self, call, handoff, destination,
                                             self._attempt_done)
        call.attempt = attempt
        handoff.emit("attempt", to=destination.uri, mode=destination.mode,
                     timeout=destination.timeout)
        attempt.start()

    def _attempt_done(self, attempt: Attempt, succeeded: bool) -> None:
        call, handoff = attempt.call, attempt.handoff
        if succeeded:
            call.state = "human" if isinstance(attempt, BridgeAttempt) else call.state
            return
        call.attempt = None
        if call.ended:
            handoff.finish("failed", "caller hung up", attempt.handoff.sip_status)
            return
        if isinstance(attempt, BlindAttempt) and attempt.refused:
            # the far side will not transfer: re-originate to the same place
            handoff.emit("fallback", to=attempt.destination.uri, mode="bridge",
                         why=f"REFER refused ({handoff.sip_status})")
            self._try(call, handoff, Destination(attempt.destination.uri, "bridge",
                                                 attempt.destination.timeout))
            return
        self._next_step(call, handoff)

    def _next_step(self, call: Call, handoff: Handoff) -> None:
        """Run the handoff's next fallback; when none is left, back to the AI."""
        while handoff.fallback:
            step = handoff.fallback.pop(0)
            if isinstance(step, Destination):
                handoff.emit("fallback", to=step.uri, mode=step.mode, why=handoff.reason)
                self._try(call, handoff, step)
                return
            action = step if isinstance(step, FallbackAction) else FallbackAction(step)
            handoff.emit("fallback", action=action.kind, why=handoff.reason)
            if action.kind == "voicemail":
                self.spawn(voicemail(self, call, handoff, action))
                return
            if action.kind == "callback":
                self.spawn(callback(self, call, handoff, action))
                return
            if action.kind == "ticket":
                self.spawn(self._ticket(call, handoff))
                return
            break  # "ai"
        handoff.finish("failed", handoff.reason or "transfer failed", handoff.sip_status)
        self.spawn(self._announce_and_return(call, handoff.reason or "transfer failed"))

    async def _ticket(self, call: Call, handoff: Handoff) -> None:
        """Open a ticket with the packet at the webhook, then the caller goes back to the AI."""
        await self.deliver_webhook(handoff, kind="ticket")
        handoff.finish("completed", "ticket opened" if any(
            e.kind == "ticket_delivered" for e in handoff.events) else "ticket not delivered")
        await self._announce_and_return(call, handoff.reason or "ticket")

    async def _announce_and_return(self, call: Call, why: str) -> None:
        """Tell the caller nobody could be reached (no silence), then hand back to the AI."""
        call.state = "ai"
        if self.return_announcement:
            await say(self, call, self.return_announcement)
            if call.handoffs:
                call.handoffs[-1].emit("announced", text=self.return_announcement)
        if not call.ended:
            self._back_to_ai(call, why, 0.0)

    def hang_up(self, call: Call) -> None:
        """warmline ends the caller's call (after voicemail, a callback promise)."""
        session = call.caller.session
        self.shell.run(lambda now: self.shell.ua.bye(session, now))

    def _back_to_ai(self, call: Call, why: str, away: float) -> None:
        call.state = "ai"
        call.attempt = None
        call.caller.media.route_to(None)
        call.caller.media.listen_to(None)
        self._listen_for_digits(call)
        handoff = call.handoffs[-1] if call.handoffs else None
        if handoff is not None:
            handoff.emit("returned_to_ai", why=why, seconds_away=round(away, 3))
            if not handoff.ended:
                handoff.finish("completed", f"back to the AI: {why}")
        self.on_return(call, why, away)

    def _refer_event(self, event: ReferResponse | ReferNotify) -> None:
        attempt = self._refers.get(id(event.refer))
        if attempt is None:
            return
        if isinstance(event, ReferResponse):
            attempt.on_refer_response(event.status)
        else:
            attempt.on_notify(event.status, event.final)

    def _outbound_event(self, event: SessionEvent) -> None:
        if isinstance(event, ReferResponse | ReferNotify | ProbeResult):
            return
        session = event.session
        attempt = self._outbound[session.id]
        if isinstance(event, CallProgress):
            attempt.on_progress(event.response)
        elif isinstance(event, CallAnswered):
            attempt.on_answered(event.response)
        elif isinstance(event, CallFailed):
            self._outbound.pop(session.id, None)
            self._legs.pop(session.id, None)
            attempt.on_failed(event.status, event.reason)
        elif isinstance(event, CallEnded):
            self._outbound.pop(session.id, None)
            self._legs.pop(session.id, None)
            self._digit_watchers.pop(session.id, None)
            if not attempt.call.ended and attempt.call.attempt is attempt:
                attempt.on_ended()
        elif isinstance(event, RequestInDialog):
            self._in_dialog(event)

    def leg_of(self, session: Session) -> CallLeg | None:
        return self._legs.get(session.id)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for leg in list(self._legs.values()):
            leg.close()
        self._legs.clear()

    # ------------------------------------------------------------------ inbound
    async def _answer(self, session: Session) -> None:
        media = await self.relay.open_leg("caller")
        if session.ended:
            media.close()  # the caller gave up while the leg was being opened
            return
        negotiation = Negotiation(media, self.media_address, self.codecs)
        try:
            answer = negotiation.answer(session.remote_sdp or b"") if session.remote_sdp \
                else negotiation.offer()
        except SdpError as error:
            media.close()
            status, warning = error.status, f'305 warmline "{quoted(error.reason)}"'
            self.shell.run(lambda now: self.shell.ua.reject(
                session, status, now, headers=[("Warning", warning)]))
            log.info("call %s refused %d: %s", session.call_id, status, error.reason,
                     extra={"call_id": session.call_id})
            return
        self._forget_ended_calls()
        leg = CallLeg(session, media, negotiation)
        self._legs[session.id] = leg
        call = Call(f"call-{next(_ids)}", leg, self.shell.now(), legs=[leg])
        self.calls[call.id] = call
        session.app["call"] = call
        self._listen_for_digits(call)
        self.shell.run(lambda now: self.shell.ua.answer(session, answer, now))
        self.record(call.id, "call.started", {"caller": _caller_number(call),
                                              "to": str(session.local_party.uri)})
        self.on_call(call)

    def _listen_for_digits(self, call: Call) -> None:
        """While with the AI, caller DTMF (RFC 4733 or INFO) is a turn: 0 asks for a person."""
        def pressed(digit: str) -> None:
            if call.state == "ai" and not call.ended:
                self.add_turn(call.id, Turn("caller", dtmf=digit))
            if call.on_dtmf is not None:
                call.on_dtmf(digit)

        call.caller.media.on_dtmf = pressed
        self._digit_watchers[call.caller.session.id] = pressed

    def _forget_ended_calls(self) -> None:
        """Ended calls stay listed for RETAIN_SECONDS (for the API), then memory is freed.

        This is the live view only; a durable record of calls is not kept yet.
        """
        horizon = self.shell.now() - RETAIN_SECONDS
        for call_id, call in list(self.calls.items()):
            if call.ended_at is not None and call.ended_at < horizon:
                del self.calls[call_id]
                for handoff in call.handoffs:
                    self.handoffs.pop(handoff.id, None)

    def _in_dialog(self, event: RequestInDialog) -> None:
        ua, leg, method = self.shell.ua, self.leg_of(event.session), event.request.method
        if leg is not None and method in ("INVITE", "UPDATE"):
            self.shell.run(lambda now: leg.renegotiate(ua, event, now))
        elif method == "INFO":
            self.shell.run(lambda now: ua.respond(event.transaction, 200, now,
                                                  session=event.session))
            self._info(event)
        elif method == "REFER":
            self.shell.run(lambda now: ua.respond(
                event.transaction, 403, now, session=event.session,
                reason="Forbidden (warmline transfers calls itself)"))
        else:
            self.shell.run(lambda now: ua.respond(event.transaction, 200, now,
                                                  session=event.session))

    def _info(self, event: RequestInDialog) -> None:
        watcher = self._digit_watchers.get(event.session.id)
        content_type = (event.request.get("content-type") or "").lower()
        if watcher is None or "dtmf-relay" not in content_type:
            return
        try:
            digit = parse_dtmf_relay(event.request.body)
        except DtmfError:
            return
        watcher(digit)

    def _ended(self, session: Session) -> None:
        self._digit_watchers.pop(session.id, None)
        leg = self._legs.pop(session.id, None)
        if leg is not None:
            leg.close()
        call = session.app.get("call")
        if not isinstance(call, Call) or call.caller is not leg:
            return
        call.state = "ended"
        call.ended_at = self.shell.now()
        self.record(call.id, "call.ended", {"reason": session.end_reason})
        attempt = call.attempt
        if attempt is None:
            return
        if attempt.finished:  # bridged: the human's side goes too
            attempt.cleanup()
            handoff = attempt.handoff
            if not handoff.ended:
                handoff.finish("completed", "the caller hung up after the connection")
        else:
            attempt.caller_hung_up()

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` in the background; cancelled by :meth:`close`."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task


def _caller_number(call: Call) -> str:
    return str(call.caller.session.remote_party.uri)
