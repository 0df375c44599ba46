"""The switchboard: SIP session events in, calls with media legs out.

It sits between the shell (which owns the sockets and runs the sans-IO UA)
and whoever drives the calls. An inbound INVITE gets a media leg and an SDP
answer from that leg's negotiation (488 with a Warning when nothing fits);
every re-INVITE or UPDATE is answered by the leg; digits (RFC 4733 or SIP
INFO) reach the leg's listener; a hang-up closes the leg so no RTP socket
outlives its call. It also places the requests a transfer asks for (an
outbound leg, a REFER, an OPTIONS probe) and hands their SIP events to the
listener given with each, so the layer above never sees the UA.

Ended calls stay listed for ``keep_ended`` seconds (the API shows them; two
minutes by default), then are forgotten in the order they ended: the records
keep them for good, and the API reads them from there. A call is kept whole
for only ``KEEP_WHOLE_SECONDS`` of that (its last BYEs, its trace, a late
NOTIFY); then its legs, media and transfer run are let go and an
:class:`EndedCall` (its listing) stands in for it.
"""

from __future__ import annotations

import asyncio
import enum
import functools
import logging
import secrets
from collections import Counter, deque
from collections.abc import Callable, Collection, Coroutine, Sequence
from typing import Any, Protocol

from warmline.calls.call import Call, CallState, Direction, EndedCall
from warmline.calls.dialog_journal import DialogJournal
from warmline.calls.leg import CallLeg, quoted
from warmline.calls.trunks import Trunks
from warmline.media.dtmf import DtmfError, parse_dtmf_relay
from warmline.media.negotiation import Negotiation
from warmline.media.plane import MediaPlane
from warmline.media.player import Player, ringback
from warmline.media.sdes import SrtpPolicy
from warmline.media.sdp import SdpError
from warmline.sip.access import Network, in_networks
from warmline.sip.dialog_memo import DialogMemo
from warmline.sip.errors import SipParseError
from warmline.sip.registration import Registration
from warmline.sip.session import (
    CallAnswered,
    CallConfirmed,
    CallEnded,
    CallFailed,
    CallProgress,
    IncomingCall,
    InDialogResponse,
    ProbeResult,
    ReferNotify,
    ReferResponse,
    ReferSubscription,
    RegistrationChanged,
    RememberedDialogEnded,
    RequestInDialog,
    Session,
    SessionEvent,
)
from warmline.sip.uri import SipUri
from warmline.transport.resolver import Resolution, Resolver
from warmline.transport.shell import SipShell

log = logging.getLogger("warmline.calls")
KEEP_ENDED_SECONDS = 120.0  # default: the API lists an ended call this long, then the records
KEEP_WHOLE_SECONDS = 10.0  # an ended call whole this long (its trace is written at 5 s)
# Q.850 cause 41, temporary failure: the call was lost, calling again may work
LEFT_OVER_REASON = 'Q.850;cause=41;text="warmline restarted; the call was lost"'
LEFT_OVER_TRIES, LEFT_OVER_RETRY_SECONDS = 3, 10.0


def new_call_id() -> str:
    """``call-`` and 64 random bits: an id seen in one call's URL tells nothing of the
    next (sequential ids let anyone holding a token walk every call)."""
    return f"call-{secrets.token_hex(8)}"


LegEvent = CallProgress | CallAnswered | CallConfirmed | CallFailed | CallEnded | InDialogResponse
LEG_EVENTS = (CallProgress, CallAnswered, CallConfirmed, CallFailed, CallEnded,
              InDialogResponse)  # what happens to a session, as opposed to a request
JOURNALED = (CallAnswered, CallConfirmed, CallFailed, CallEnded, RememberedDialogEnded)
LegListener = Callable[[SessionEvent], None]  # progress, answer, failure, end of a leg
ReferListener = Callable[[ReferResponse | ReferNotify], None]


class CallObserver(Protocol):
    """Who hears about calls: the engine above (agents, brain, records)."""

    def call_started(self, call: Call) -> None: ...

    def call_ended(self, call: Call, reason: str | None) -> None: ...

    def call_forgotten(self, call: Call) -> None:
        """The call is let go (``KEEP_WHOLE_SECONDS`` after its end): drop what is kept of
        it beside its listing."""

    def call_unlisted(self, call: EndedCall) -> None:
        """The call has left GET /calls (``keep_ended`` seconds after its end)."""

    def registration_changed(self, registration: Registration) -> None: ...


class Overload(enum.Enum):
    """Why a new call was answered 503."""

    MAX_CALLS = "max calls"
    NO_MEDIA_PORTS = "no media ports"


class Switchboard:
    """Answers inbound calls on ``plane`` and places what transfers ask for."""

    def __init__(self, shell: SipShell, plane: MediaPlane, media_address: str,
                 codecs: list[str], observer: CallObserver, *, trunks: Trunks | None = None,
                 resolver: Resolver | None = None,
                 trusted_identity: Sequence[Network] = (),
                 srtp: SrtpPolicy = SrtpPolicy.ACCEPT,
                 early_media: float | None = None, max_calls: int = 0,
                 retry_after: int = 5, journal: DialogJournal | None = None,
                 keep_ended: float = KEEP_ENDED_SECONDS) -> None:
        self.shell = shell
        # seconds an ended call stays in ``calls``: long enough for the API to see how it
        # ended, short enough that memory does not grow with the last hour's traffic
        self.keep_ended = keep_ended
        self.keep_whole = KEEP_WHOLE_SECONDS  # of which this long whole (then: its listing)
        self.journal = journal  # the dialogs we own, for the next start after a crash
        # the same dialogs for the cluster (cluster/takeover.py): memo key -> what an heir
        # needs; on_dialog_kept/gone tell the shared state as they change
        self.kept_dialogs: dict[str, dict[str, Any]] = {}
        self.on_dialog_kept: Callable[[str, dict[str, Any]], None] | None = None
        self.on_dialog_gone: Callable[[str], None] | None = None
        self.left_over_ended = 0  # dialogs a crashed run left, ended by this one
        self._left_over_tries: dict[str, int] = {}  # BYEs sent, by memo key
        self.max_calls = max_calls  # calls at once; a new one past it gets 503 (0: no cap)
        self.retry_after = retry_after
        self.refused: Counter[Overload] = Counter()  # calls answered 503, by reason
        self.srtp = srtp
        self.early_media = early_media  # seconds of ringback before an answer; None: at once
        self._unanswered: dict[str, tuple[bytes, asyncio.TimerHandle]] = {}  # by call id
        self.trusted_identity = tuple(trusted_identity)  # whose P-Asserted-Identity we take
        self.trunks = trunks or Trunks()
        self.resolver = resolver or shell.resolver
        self.plane = plane
        self.media_address = media_address
        self.codecs = codecs
        self.observer = observer
        self.calls: dict[str, Call] = {}  # live, and ended in the last KEEP_WHOLE_SECONDS
        self.ended_calls: dict[str, EndedCall] = {}  # ended before that, still listed
        self._ended: deque[tuple[float, str]] = deque()  # (ended at, call id), oldest first
        self._listed: deque[EndedCall] = deque()  # ``ended_calls``, oldest first
        self._legs: dict[str, CallLeg] = {}  # by session id
        self._leg_listeners: dict[str, LegListener] = {}  # outbound legs, by session id
        # by id() of the subscription, until it is done (final NOTIFY, refusal, no NOTIFY
        # to come) or its call is forgotten: each listener holds its transfer and call
        self._refers: dict[int, tuple[ReferSubscription, ReferListener]] = {}
        self._probes: dict[int, asyncio.Future[int]] = {}  # by id() of the probe
        self._tasks: set[asyncio.Task[None]] = set()
        shell.on_event = self.on_event

    def on_event(self, event: SessionEvent) -> None:
        if isinstance(event, JOURNALED):
            self._keep_dialogs(event)
        if isinstance(event, IncomingCall):
            self._spawn(self._answer(event.session))
        elif isinstance(event, ReferResponse | ReferNotify):
            self._refer_event(event)
        elif isinstance(event, ProbeResult):
            waiter = self._probes.pop(id(event.probe), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(event.status)
        elif isinstance(event, RequestInDialog):
            self._in_dialog(event)
        elif isinstance(event, RegistrationChanged):
            self.observer.registration_changed(event.registration)
        elif isinstance(event, LEG_EVENTS):
            self._session_event(event)

    def _keep_dialogs(self, event: SessionEvent) -> None:
        """Keep the dialog journal (and the cluster's copy) in step: a row per confirmed
        dialog, until it ends."""
        if isinstance(event, RememberedDialogEnded):
            if self.journal is not None:
                self._left_over_answered(self.journal, event)
            return
        assert isinstance(event, LEG_EVENTS)
        session = event.session
        if isinstance(event, CallConfirmed | CallAnswered):
            self.keep_dialog(session)
        elif isinstance(event, CallEnded | CallFailed):
            key = session.app.pop("memo_key", None)
            if isinstance(key, str):
                if self.journal is not None:
                    self.journal.forget(key)
                if self.kept_dialogs.pop(key, None) is not None and self.on_dialog_gone:
                    self.on_dialog_gone(key)

    def keep_dialog(self, session: Session) -> None:
        """Journal a confirmed dialog (again, after it changed: an adopted one has our
        Contact now), and hand its entry to the cluster when one listens."""
        memo = self.shell.ua.memo_of(session)
        if memo is None:
            return
        if self.journal is not None:
            self.journal.remember(memo)
        session.app["memo_key"] = memo.key
        if self.on_dialog_kept is None:
            return
        entry = self._dialog_entry(session, memo)
        if entry is not None:
            self.kept_dialogs[memo.key] = entry
            self.on_dialog_kept(memo.key, entry)

    def _dialog_entry(self, session: Session, memo: DialogMemo) -> dict[str, Any] | None:
        """What an heir needs besides the memo: the call and leg, the codec and our SDP
        origin (a re-offer keeps its session id and raises its version, RFC 3264 §8)."""
        call = _call_of(session)
        if call is None:
            return None
        leg = self._legs.get(session.id)
        return {"memo_key": memo.key, "memo": memo.to_json(), "call": call.id,
                "role": "caller" if call.caller.session is session else "human",
                "inbound": session.inbound, "codec": leg.codec if leg else None,
                "anchor": leg.media.anchor if leg else None,
                "sdp": [leg.negotiation.session_id, leg.negotiation.version] if leg else None}

    # ------------------------------------------------------------------ takeover
    def take_leg(self, call: Call, session: Session, leg: CallLeg,
                 listener: LegListener) -> None:
        """A leg of an adopted call (calls/adoption.py): its events go to ``listener``,
        and the caller's leg ending ends the call, as for a call we placed."""
        session.app["call" if call.caller is leg else "leg_of"] = call
        self._legs[session.id] = leg
        self._leg_listeners[session.id] = listener

    def add_call(self, call: Call) -> None:
        self.forget_ended_calls()
        self._unlist(call.id)  # an id back (adopted back from the node that inherited it)
        self.calls[call.id] = call
        self._say_if_full()

    def _unlist(self, call_id: str) -> None:
        listed = self.ended_calls.pop(call_id, None)
        if listed is not None:
            self.observer.call_unlisted(listed)

    def retire_ended(self, call_id: str) -> bool:
        """Make room for a call coming back under its id (taken over from a node that had
        inherited it from us): True when ``call_id`` is free now, False when it is live.
        An ended one is forgotten at once (rare: a scan of the ended queue)."""
        self._unlist(call_id)
        call = self.calls.get(call_id)
        if call is None:
            return True
        if not call.ended:
            return False
        self._ended = deque(entry for entry in self._ended if entry[1] != call_id)
        del self.calls[call_id]
        self.observer.call_forgotten(call)
        self.observer.call_unlisted(EndedCall.of(call))
        return True

    def _say_if_full(self) -> None:
        """The UA answers OPTIONS 503 while we are at ``max_calls`` (a proxy stops sending)."""
        self.shell.ua.full = bool(self.max_calls) and self.live_calls >= self.max_calls

    def let_go(self, heirs: dict[str, str]) -> int:
        """Drop, without a word to the far ends, the dialogs another node inherited while
        our beats lapsed (memo key -> the heir); their calls end here. How many.

        Every session of those calls is marked first, so the cascade of one leg ending
        (a bridge hanging up its other side, a transfer cleaning up) sends nothing in a
        dialog the heir serves; the calls are marked too (their registry entries are
        the heir's, not ours to delete). A leg the heir did not take (one still ringing,
        or confirmed after it looked) is ours to end as usual."""
        sessions = [s for s in self.shell.ua.sessions if s.app.get("memo_key") in heirs]
        for session in sessions:
            session.let_go = True
            call = _call_of(session)
            if call is not None:
                call.taken_by = heirs[str(session.app["memo_key"])]
        self.shell.run(functools.partial(self._let_go_all, sessions))
        return len(sessions)

    def _let_go_all(self, sessions: list[Session], now: float) -> None:
        for session in sessions:
            heir = self._heir_of(session)
            self.shell.ua.let_go(session, now, f"taken over by {heir}")

    @staticmethod
    def _heir_of(session: Session) -> str:
        call = _call_of(session)
        return call.taken_by if call is not None and call.taken_by else "another node"

    def _left_over_answered(self, journal: DialogJournal, event: RememberedDialogEnded) -> None:
        """Forget the row once the far end answered; no answer (408) or no route (503):
        try again a little later (the network may not be up yet), then give up."""
        memo = event.memo
        tries = self._left_over_tries.get(memo.key, 1)
        if event.status in (408, 503) and tries < LEFT_OVER_TRIES:
            self._left_over_tries[memo.key] = tries + 1
            asyncio.get_running_loop().call_later(
                LEFT_OVER_RETRY_SECONDS, self.shell.run,
                functools.partial(self._end_remembered, memo, LEFT_OVER_REASON))
            return
        self._left_over_tries.pop(memo.key, None)
        journal.forget(memo.key)
        self.left_over_ended += 1
        log.info("ended a call the last run left up (Call-ID %s): %d", memo.call_id,
                 event.status)

    def _end_remembered(self, memo: DialogMemo, reason: str, now: float) -> None:
        self.shell.ua.end_remembered(memo, now, reason)

    def left_over_keys(self) -> list[str]:
        """The journal's dialogs from a crashed run (to ask the cluster which were taken)."""
        return [memo.key for memo in self.journal.left_over()] if self.journal else []

    def end_left_over(self, reason: str = LEFT_OVER_REASON,
                      taken: Collection[str] = ()) -> int:
        """BYE every dialog a crashed run left in the journal, except those another node
        took over (``taken``: their calls go on there); how many BYEs were sent."""
        if self.journal is None:
            return 0
        memos = [memo for memo in self.journal.left_over() if memo.key not in taken]
        for key in taken:
            self.journal.forget(key)
        for memo in memos:
            try:
                self.shell.run(functools.partial(self._end_remembered, memo, reason))
            except (SipParseError, ValueError) as error:
                log.warning("dialog journal: cannot end %s: %s", memo.call_id, error)
                self.journal.forget(memo.key)
        if memos:
            log.warning("ending %d call(s) the last run left up (it did not stop cleanly)",
                        len(memos))
        return len(memos)

    def _session_event(self, event: LegEvent) -> None:
        if event.session.id in self._leg_listeners:
            self._outbound_event(event)
        elif isinstance(event, CallEnded | CallFailed):
            self._ended_session(event.session)
        elif isinstance(event, CallConfirmed):
            call = event.session.app.get("call")
            if isinstance(call, Call) and call.answered_at is None:
                call.answered_at = self.shell.now()  # a 200 that waited for a PRACK

    # ------------------------------------------------------------------ what transfers ask
    async def dial(self, call: Call, uri: str, from_: str, headers: list[tuple[str, str]],
                   listener: LegListener) -> CallLeg:
        """A new media leg and an INVITE to ``uri`` offering the caller's codec first.

        The destination is routed (a trunk's account, outbound proxy and caller ID)
        and its next hop resolved (RFC 3263) before anything is opened: NoRoute or
        ResolutionError then, OSError when no media port is free, ValueError when
        ``uri`` cannot be called.
        """
        route = self.trunks.route(uri)
        resolution = await self._resolve(route.next_hop)
        media = await self.plane.open_leg("human")
        trunk = route.trunk
        srtp = trunk.srtp if trunk is not None and trunk.srtp is not None else self.srtp
        negotiation = Negotiation(media, self.media_address, self.codecs, srtp)
        first = call.caller.codec or self.codecs[0]
        offer = negotiation.offer(codecs=[first] + [
            name for name in self.codecs if name.lower() != first.lower()])
        caller_id = trunk.caller_id if trunk and trunk.caller_id else from_
        try:
            session = self.shell.run(lambda now: self.shell.ua.invite(
                route.request_uri, now, sdp=offer, headers=[*route.headers, *headers],
                from_=caller_id, targets=resolution.targets, credentials=route.credentials))
        except ValueError:
            media.close()
            raise
        leg = CallLeg(session, media, negotiation)
        call.legs.append(leg)
        session.app["leg_of"] = call
        self._legs[session.id] = leg
        self._leg_listeners[session.id] = listener
        return leg

    async def originate(self, uri: str, from_: str, listener: LegListener,
                        trunk_name: str | None = None) -> Call:
        """A new outbound call to ``uri``: its "caller" leg is the customer we INVITE.

        Routed and resolved as :meth:`dial` is (NoRoute, ResolutionError, OSError,
        ValueError). ``from_`` is our caller ID (a trunk's own caller ID is used when
        ``from_`` is empty). ``listener`` hears the leg's progress, answer, failure and
        end; once it ends the call ends too (the observer's ``call_ended``). The call
        counts against ``max_calls`` like an inbound one (OverflowError past it).
        ``trunk_name``: through that trunk (else the first trunk that serves ``uri``).
        """
        if self.max_calls and self.live_calls >= self.max_calls:
            self.refused[Overload.MAX_CALLS] += 1
            raise OverflowError(f"{self.max_calls} calls at once")
        route = self.trunks.route_via(trunk_name, uri) if trunk_name \
            else self.trunks.route(uri)
        resolution = await self._resolve(route.next_hop)
        media = await self.plane.open_leg("caller")
        trunk = route.trunk
        srtp = trunk.srtp if trunk is not None and trunk.srtp is not None else self.srtp
        negotiation = Negotiation(media, self.media_address, self.codecs, srtp)
        offer = negotiation.offer()
        caller_id = from_ or (trunk.caller_id if trunk and trunk.caller_id else "")
        try:
            session = self.shell.run(lambda now: self.shell.ua.invite(
                route.request_uri, now, sdp=offer, headers=route.headers,
                from_=caller_id or None, targets=resolution.targets,
                credentials=route.credentials))
        except ValueError:
            media.close()
            raise
        leg = CallLeg(session, media, negotiation)
        call = Call(new_call_id(), leg, self.shell.now(), state=CallState.DIALING, legs=[leg],
                    direction=Direction.OUTBOUND)
        self.add_call(call)
        session.app["call"] = call
        self._legs[session.id] = leg
        self._leg_listeners[session.id] = listener
        return call

    def refer(self, leg: CallLeg, refer_to: str, headers: list[tuple[str, str]],
              listener: ReferListener) -> ReferSubscription:
        """REFER ``leg``'s far end to ``refer_to`` with Referred-By naming us."""
        session = leg.session
        referred_by = f"<{session.local_party.uri}>"
        refer = self.shell.run(lambda now: self.shell.ua.refer(
            session, refer_to, now, referred_by=referred_by, headers=headers))
        self._refers[id(refer)] = (refer, listener)
        return refer

    def _refer_event(self, event: ReferResponse | ReferNotify) -> None:
        entry = self._refers.get(id(event.refer))
        if entry is None or entry[0] is not event.refer:
            return
        if event.refer.done:
            del self._refers[id(event.refer)]
        entry[1](event)

    async def _resolve(self, next_hop: SipUri) -> Resolution:
        """RFC 3263 targets for ``next_hop``; a TLS target is verified against the URI's
        domain (RFC 5922), whatever address it resolved to."""
        resolution = await self.resolver.resolve(next_hop)
        for target in resolution.targets:
            if target.transport == "tls":
                self.shell.tls_names[(target.host, target.port)] = next_hop.bare_host
        return resolution

    async def probe(self, uri: str, timeout: float) -> int:
        """OPTIONS ``uri``: its final status, or 408 when nothing answers within ``timeout``.

        Routed and resolved like a call (NoRoute, ResolutionError).
        """
        route = self.trunks.route(uri)
        resolution = await self._resolve(route.next_hop)
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        probe = self.shell.run(lambda now: self.shell.ua.probe(
            route.request_uri, now, target=resolution.targets[0],
            credentials=route.credentials, headers=route.headers))
        self._probes[id(probe)] = waiter
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return 408
        finally:
            self._probes.pop(id(probe), None)

    def hang_up(self, leg: CallLeg, reason: str | None = None) -> None:
        """BYE (CANCEL before an answer, 480 before we answered); the media closes at the end.
        ``reason``: a Reason header (RFC 3326) for the BYE."""
        session = leg.session
        self.shell.run(lambda now: self.shell.ua.bye(session, now, reason))

    def cancel(self, leg: CallLeg) -> None:
        session = leg.session
        self.shell.run(lambda now: self.shell.ua.cancel(session, now))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for leg in list(self._legs.values()):
            leg.close()
        self._legs.clear()

    @property
    def live_calls(self) -> int:
        """Calls not ended yet (the remembered ones minus those ended)."""
        return len(self.calls) - len(self._ended)

    # ------------------------------------------------------------------ inbound
    async def _answer(self, session: Session) -> None:
        if self.max_calls and self.live_calls >= self.max_calls:
            self._refuse(session, Overload.MAX_CALLS, f"{self.max_calls} calls at once")
            return
        try:
            media = await self.plane.open_leg("caller")
        except OSError as error:  # every media port taken: say so, never leave it ringing
            self._refuse(session, Overload.NO_MEDIA_PORTS, str(error))
            return
        if session.ended:
            media.close()  # the caller gave up while the leg was being opened
            return
        negotiation = Negotiation(media, self.media_address, self.codecs, self.srtp)
        try:
            answer = negotiation.answer(session.remote_sdp) if session.remote_sdp \
                else negotiation.offer()
        except SdpError as error:
            media.close()
            status, warning = error.status, f'305 warmline "{quoted(error.reason)}"'
            self.shell.run(lambda now: self.shell.ua.reject(
                session, status, now, headers=[("Warning", warning)]))
            log.info("call %s refused %d: %s", session.call_id, status, error.reason,
                     extra={"call_id": session.call_id})
            return
        leg = CallLeg(session, media, negotiation)
        self._legs[session.id] = leg
        call = Call(new_call_id(), leg, self.shell.now(), legs=[leg],
                    asserted_identity=self._asserted_identity(session))
        self.add_call(call)
        session.app["call"] = call
        if self.early_media is not None and session.remote_sdp:
            self._ring_with_early_media(call, answer, self.early_media)
        else:
            self._send_answer(call, answer)
        self.observer.call_started(call)

    def _refuse(self, session: Session, why: Overload, detail: str) -> None:
        """503 with Retry-After, so the caller's side tries elsewhere or later (RFC 3261
        §21.5.4) instead of hearing nothing; counted by reason for the metrics."""
        self.refused[why] += 1
        if session.ended:
            return
        headers = [("Retry-After", str(self.retry_after)),
                   ("Warning", f'399 warmline "{quoted(detail)}"')]
        self.shell.run(lambda now: self.shell.ua.reject(
            session, 503, now, f"Service Unavailable ({why.value})", headers=headers))
        count = self.refused[why]
        if count in (1, 10, 100) or count % 1000 == 0:
            log.warning("call refused 503 (%s, %d so far): %s", why.value, count, detail)

    def answer(self, call: Call) -> None:
        """Answer a call still ringing with early media (its AI is ready); else nothing."""
        pending = self._unanswered.pop(call.id, None)
        if pending is None or call.caller.session.ended:
            return
        answer, deadline = pending
        deadline.cancel()
        self._send_answer(call, answer)

    def _ring_with_early_media(self, call: Call, answer: bytes, limit: float) -> None:
        """183 with our answer, ringback on the stream, until :meth:`answer` or ``limit``.

        The caller hears ringing, not an answered silence, while the AI gets
        ready, and is not charged for it; the answer goes at ``limit`` whatever
        happens, so nobody rings for ever.
        """
        session = call.caller.session
        self.shell.run(lambda now: self.shell.ua.ring(session, now, 183, sdp=answer))
        call.caller.media.play(Player(ringback(), loop=True))
        deadline = asyncio.get_running_loop().call_later(limit, self.answer, call)
        self._unanswered[call.id] = (answer, deadline)

    def _send_answer(self, call: Call, answer: bytes) -> None:
        session = call.caller.session
        self.shell.run(lambda now: self.shell.ua.answer(session, answer, now))
        if session.dialog is not None:  # sent, not held for the PRACK of a reliable 183
            call.answered_at = self.shell.now()

    def _asserted_identity(self, session: Session) -> str | None:
        """The caller's P-Asserted-Identity if a trusted peer sent it (RFC 3325 §5).

        From anyone else it is just a claim: a stranger could put a bank's number
        there. It is dropped, and the human sees the caller's From instead.
        """
        asserted = session.invite.get("p-asserted-identity")
        source = session.source
        if asserted is None or source is None:
            return None
        if in_networks(source.host, self.trusted_identity):
            return asserted
        log.debug("call from %s: P-Asserted-Identity from an untrusted peer dropped",
                  source.host, extra={"call_id": session.call_id})
        return None

    def forget_ended_calls(self) -> None:
        """Let go of calls that ended over ``keep_whole`` seconds ago, keeping their listing,
        and drop the listings over ``keep_ended`` seconds old. Constant time per call: the
        oldest first off two queues, never a scan. Runs as each call arrives and on the
        engine's timer (an idle node lets go too)."""
        now = self.shell.now()
        unlisted_before = now - self.keep_ended
        whole_before = now - min(self.keep_whole, self.keep_ended)
        ended = self._ended
        while ended and ended[0][0] < whole_before:
            ended_at, call_id = ended.popleft()
            call = self.calls.get(call_id)
            if call is not None and call.ended_at == ended_at:  # not a new call under its id
                del self.calls[call_id]
                self._forget(call, listed=ended_at >= unlisted_before)
        listed = self._listed
        while listed and listed[0].ended_at < unlisted_before:
            entry = listed.popleft()
            if self.ended_calls.get(entry.id) is entry:  # not an id that came back since
                del self.ended_calls[entry.id]
                self.observer.call_unlisted(entry)

    def _forget(self, call: Call, *, listed: bool) -> None:
        entry = EndedCall.of(call)
        try:
            self._let_go(call)
        except Exception:  # runs as a new call is taken: a bug here must not cost it
            log.exception("call %s: letting go of it failed", call.id)
        self.observer.call_forgotten(call)
        if listed:
            self.ended_calls[call.id] = entry
            self._listed.append(entry)
        else:
            self.observer.call_unlisted(entry)

    def _let_go(self, call: Call) -> None:
        """What still points at a forgotten call goes: the listeners of its REFERs that never
        finished (Refer-Sub: false, a NOTIFY that never came), and the ways back to it that
        make it a cycle only a full garbage collection frees (session.app -> call -> leg ->
        session; closures over it for its digits; an RTCP session and its leg)."""
        sessions = {id(leg.session) for leg in call.legs}
        for key in [key for key, (refer, _) in self._refers.items()
                    if id(refer.session) in sessions]:
            del self._refers[key]
        call.on_dtmf = None
        for leg in call.legs:
            leg.session.app.pop("call", None)
            leg.session.app.pop("leg_of", None)  # a leg we dialled: its session outlives it
            leg.on_digit = None  # a closure over the call, on the leg and its media
            release = getattr(leg.media, "release", None)  # the embedded relay's legs
            if release is not None:
                release()

    def _in_dialog(self, event: RequestInDialog) -> None:
        ua, leg, method = self.shell.ua, self._legs.get(event.session.id), event.request.method
        if leg is not None and method in ("INVITE", "UPDATE"):
            self.shell.run(lambda now: leg.renegotiate(ua, event, now))
        elif method == "REFER":
            self.shell.run(lambda now: ua.respond(
                event.transaction, 403, now, session=event.session,
                reason="Forbidden (warmline transfers calls itself)"))
        else:
            self.shell.run(lambda now: ua.respond(event.transaction, 200, now,
                                                  session=event.session))
            if method == "INFO" and leg is not None:
                _info_digit(event, leg)

    def _outbound_event(self, event: LegEvent) -> None:
        session = event.session
        listener = self._leg_listeners[session.id]
        call = session.app.get("call")
        originated = isinstance(call, Call) and call.caller.session is session
        if originated and isinstance(event, CallAnswered | CallConfirmed):
            assert isinstance(call, Call)
            if call.answered_at is None:
                call.answered_at = self.shell.now()
        if isinstance(event, CallEnded | CallFailed):
            del self._leg_listeners[session.id]
            if originated:  # the customer's leg of a call we placed: the call ends
                listener(event)
                self._ended_session(session)
                return
            leg = self._legs.pop(session.id, None)
            if leg is not None:
                leg.close()
        listener(event)

    def _ended_session(self, session: Session) -> None:
        leg = self._legs.pop(session.id, None)
        if leg is not None:
            leg.close()
        call = session.app.get("call")
        if not isinstance(call, Call) or call.caller is not leg:
            return
        call.state = CallState.ENDED
        call.ended_at = self.shell.now()
        unanswered = self._unanswered.pop(call.id, None)
        if unanswered is not None:
            unanswered[1].cancel()  # hung up while ringing
        self._ended.append((call.ended_at, call.id))
        self._say_if_full()
        self.observer.call_ended(call, session.end_reason)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _call_of(session: Session) -> Call | None:
    """The call a session is a leg of: the caller's (``call``) or one we dialled for it."""
    call = session.app.get("call") or session.app.get("leg_of")
    return call if isinstance(call, Call) else None


def _info_digit(event: RequestInDialog, leg: CallLeg) -> None:
    """A digit sent as SIP INFO (application/dtmf-relay) goes where the leg's digits go."""
    content_type = (event.request.get("content-type") or "").lower()
    if "dtmf-relay" not in content_type:
        return
    try:
        digit = parse_dtmf_relay(event.request.body)
    except DtmfError:
        return
    leg.digit(digit)
