"""Transfer attempts: blind (REFER tracked to a real outcome) and bridge (re-origination).

A 202 Accepted says only that the far end will try. A blind attempt succeeds
on a 2xx sipfrag in a NOTIFY and nothing else; the AI's leg is hung up only
then. A REFER refused outright (403/405/489/501/603 and the like: carriers
that will not transfer) turns into a bridge attempt to the same destination
at once; a failed or silent transfer (no final NOTIFY within the timeout)
goes to the handoff's fallback. A bridge attempt calls the destination
itself while the caller hears ringback, bridges the media on answer and
CANCELs when the ring timeout passes. Whatever fails, the caller stays with
warmline: the next destination is tried, or the caller goes back to the AI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol
from urllib.parse import quote

from warmline.calls.handoff import CallerId, Destination, Handoff
from warmline.calls.leg import CallLeg
from warmline.media.conference import Conference
from warmline.media.negotiation import Negotiation
from warmline.media.player import Player, Samples, ringback
from warmline.media.sdp import SdpError
from warmline.media.tts import TtsError
from warmline.sip.headers import NameAddr
from warmline.sip.message import Response
from warmline.sip.session import ReferSubscription, Session

if TYPE_CHECKING:
    from warmline.calls.engine import Call, CallEngine

REFER_REFUSALS = frozenset({403, 405, 420, 489, 501, 603})
WHISPER_WAIT = 5.0  # seconds a human who answered waits at most for the whisper's TTS


def with_uri_header(uri: str, name: str, value: str) -> str:
    """``uri`` carrying a header for the INVITE the transferee sends (RFC 3261 §19.1.1).

    UAs that honour Refer-To headers copy it into their INVITE, so the human's
    side sees the handoff id even on a blind transfer.
    """
    separator = "&" if "?" in uri else "?"
    return f"{uri}{separator}{quote(name, safe='')}={quote(value, safe='')}"


def identity_headers(caller: Session, caller_id: CallerId, destination: str
                     ) -> tuple[NameAddr | str, list[tuple[str, str]]]:
    """The From and identity headers of the INVITE to the human (see CallerId)."""
    original = NameAddr(caller.remote_party.uri, caller.remote_party.display_name)
    asserted = caller.invite.get("p-asserted-identity")
    headers: list[tuple[str, str]] = []
    identity: NameAddr | str = original
    if caller_id.mode == "original":
        headers.append(("P-Asserted-Identity", asserted or str(original)))
    else:
        identity = f"<{caller_id.uri}>"
        headers.append(("P-Asserted-Identity", identity))
        if caller_id.mode == "trunk":
            headers.append(("X-Warmline-Original-Caller", asserted or str(original)))
    diverter = caller.invite.uri  # the number the caller dialled: the AI
    if caller_id.diversion:
        headers.append(("Diversion", f"<{diverter}>;reason=unconditional;counter=1"))
    if caller_id.history_info:
        headers.append(("History-Info", f"<{diverter}>;index=1,<{destination}>;index=1.1;mp=1"))
    return identity, headers


def failure_kind(status: int) -> str:
    """What a final status means for a transfer, in the words the records use."""
    if status in (486, 600):
        return "busy"
    if status in (408, 480, 487):
        return "no answer"
    if status in (603, 403):
        return "declined"
    if status in (404, 604, 410, 484):
        return "not found"
    if status >= 500:
        return "server error"
    return "refused"


class ReferWatcher(Protocol):
    """An attempt following a REFER it sent (blind, or warm connecting with Replaces)."""

    def on_refer_response(self, status: int) -> None: ...

    def on_notify(self, status: int, final: bool) -> None: ...


class Attempt:
    """One destination tried for a handoff; reports back through ``done``."""

    def __init__(self, engine: CallEngine, call: Call, handoff: Handoff,
                 destination: Destination, done: Callable[[Attempt, bool], None]) -> None:
        self.engine = engine
        self.call = call
        self.handoff = handoff
        self.destination = destination
        self._done = done
        self.finished = False
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        raise NotImplementedError

    def caller_hung_up(self) -> None:
        self.fail("caller hung up", None)

    def arm_timeout(self, reason: str) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.destination.timeout, self.on_timeout, reason)

    def on_timeout(self, reason: str) -> None:
        self.fail(reason, 408)

    def succeed(self, reason: str) -> None:
        if self.finished:
            return
        self.finished = True
        self._cancel_timer()
        self._done(self, True)
        self.handoff.emit("attempt_succeeded", to=self.destination.uri, reason=reason)

    def fail(self, reason: str, status: int | None) -> None:
        if self.finished:
            return
        self.finished = True
        self._cancel_timer()
        self.cleanup()
        self.handoff.emit("attempt_failed", to=self.destination.uri,
                          mode=self.destination.mode, reason=reason, sip_status=status)
        self.handoff.reason, self.handoff.sip_status = reason, status
        self._done(self, False)

    def cleanup(self) -> None:
        """Release whatever the attempt holds (legs, calls being set up)."""

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class BlindAttempt(Attempt):
    """REFER the caller's side to the destination and follow the NOTIFYs."""

    refer: ReferSubscription | None = None
    refused = False  # the REFER itself was refused (not the transfer it asked for)

    def start(self) -> None:
        engine, caller = self.engine, self.call.caller
        caller.media.play(Player(engine.hold_audio(), loop=True))
        allowed = caller.session.invite.values("allow")
        methods = {method.strip().upper() for value in allowed for method in value.split(",")}
        if allowed and "REFER" not in methods:  # it told us it cannot: do not even try
            self.refused = True
            self.fail("the caller's side does not allow REFER", 405)
            return
        referred_by = str(caller.session.local_party.uri)
        headers = [("X-Warmline-Handoff", self.handoff.id)]
        target = with_uri_header(self.destination.uri, "X-Warmline-Handoff", self.handoff.id)
        refer_to = f"<{target}>"
        self.refer = engine.shell.run(lambda now: engine.shell.ua.refer(
            caller.session, refer_to, now, referred_by=f"<{referred_by}>", headers=headers))
        engine.watch_refer(self.refer, self)
        self.arm_timeout(f"no final NOTIFY within {self.destination.timeout:g} s")

    def on_refer_response(self, status: int) -> None:
        if 200 <= status < 300:
            self.handoff.progress("accepted", sip_status=status)
        elif status >= 300:
            self.refused = status in REFER_REFUSALS
            self.fail(f"REFER refused ({status})", status)

    def on_notify(self, status: int, final: bool) -> None:
        if not final:
            if 180 <= status < 200:
                self.handoff.progress("ringing", sip_status=status)
            return
        if 200 <= status < 300:
            self.succeed(f"the transferee reports {status}")
            session = self.call.caller.session
            self.engine.shell.run(lambda now: self.engine.shell.ua.bye(session, now))
            self.handoff.finish("completed", "transferred (REFER)", status)
        else:
            self.fail(f"transfer failed ({status})", status)

    def cleanup(self) -> None:
        if self.refer is not None:
            self.engine.unwatch_refer(self.refer)


class BridgeAttempt(Attempt):
    """Call the destination from warmline and bridge the two legs on answer."""

    human: CallLeg | None = None
    session: Session | None = None

    def start(self) -> None:
        self.call.caller.media.play(Player(ringback(), loop=True))
        self.engine.spawn(self._dial())

    async def _dial(self) -> None:
        engine, caller = self.engine, self.call.caller
        media = await engine.relay.open_leg("human")
        if self.finished:
            media.close()
            return
        negotiation = Negotiation(media, engine.media_address, engine.codecs)
        caller_codec = caller.negotiation.stream.codec.name if caller.negotiation.stream \
            else engine.codecs[0]
        offer = negotiation.offer(codecs=[caller_codec] + [
            name for name in engine.codecs if name.lower() != caller_codec.lower()])
        identity, headers = identity_headers(caller.session, self.handoff.caller_id,
                                             self.destination.uri)
        headers.insert(0, ("X-Warmline-Handoff", self.handoff.id))
        try:
            session = engine.shell.run(lambda now: engine.shell.ua.invite(
                self.destination.uri, now, sdp=offer, headers=headers, from_=identity))
        except ValueError as error:
            media.close()
            self.fail(f"cannot call {self.destination.uri}: {error}", None)
            return
        self.session = session
        self.human = CallLeg(session, media, negotiation)
        self.call.legs.append(self.human)
        engine.watch_session(session, self)
        self.arm_timeout(f"no answer within {self.destination.timeout:g} s")

    def on_progress(self, response: Response) -> None:
        if 180 <= response.status < 190:
            self.handoff.progress("ringing", sip_status=response.status)

    def on_answered(self, response: Response) -> None:
        human = self.human
        assert human is not None
        if self.finished:  # given up meanwhile (the caller left): not to be connected
            self.cleanup()
            return
        try:
            human.negotiation.accept(response.body)
        except SdpError as error:
            self.fail(f"the destination's answer is unusable: {error.reason}", 488)
            return
        self.handoff.progress("answered", sip_status=response.status)
        self.connect()

    def connect(self) -> None:
        """Bridge the caller and the human; the AI leaves the media path."""
        human, caller = self.human, self.call.caller
        assert human is not None
        human.media.detect_first_word(self._first_word)
        caller.media.route_to(human.media)
        human.media.route_to(caller.media)  # hold audio goes on until the human's audio flows
        self.succeed("connected")
        self.handoff.progress("connected")

    def _first_word(self, at: float) -> None:
        del at
        self.handoff.emit("human_first_word")

    def on_failed(self, status: int, reason: str) -> None:
        self.fail(f"{failure_kind(status)}: {status} {reason}".rstrip(), status)

    def on_ended(self) -> None:
        """The human hung up: after the bridge was made, or before it."""
        if self.finished:
            self.engine.human_left(self.call, self)
        else:
            self.fail(self.early_hangup(), None)

    def early_hangup(self) -> str:
        return "the destination hung up before the connection"

    def on_timeout(self, reason: str) -> None:
        session = self.session
        if session is not None:
            self.engine.shell.run(lambda now: self.engine.shell.ua.cancel(session, now))
        self.fail(reason, 408)

    def cleanup(self) -> None:
        session, human = self.session, self.human
        if session is not None and not session.ended:
            self.engine.shell.run(lambda now: self.engine.shell.ua.bye(session, now))
        if human is not None:
            human.close()


class WarmAttempt(BridgeAttempt):
    """Consult the human first: the caller holds, the human hears a whisper, then connect.

    The whisper is synthesised while the human's phone rings, so it starts
    the moment they answer. Only the human hears it; the caller hears hold
    audio until the human's own audio reaches them. With acceptance asked
    for, the human presses 1 (any other digit declines) or speaks first; a
    decline, silence past ``accept_timeout`` or a hang-up during the whisper
    fails the attempt and the fallback runs, the caller still holding.
    """

    whisper: Samples | None = None
    _whisper_ready: asyncio.Task[None]

    def start(self) -> None:
        self.call.caller.media.play(Player(self.engine.hold_audio(), loop=True))
        self._whisper_ready = self.engine.spawn(self._prepare_whisper())
        self.engine.spawn(self._dial())

    async def whisper_synthesised(self) -> None:
        """TTS runs while the phone rings; wait for it (bounded) if it is still busy."""
        try:
            await asyncio.wait_for(asyncio.shield(self._whisper_ready), WHISPER_WAIT)
        except TimeoutError:
            self.handoff.emit("whisper_unavailable", reason=f"TTS took over {WHISPER_WAIT:g} s")

    async def _prepare_whisper(self) -> None:
        text = self.destination.whisper or self.handoff.whisper_text()
        loop = asyncio.get_running_loop()
        try:
            self.whisper = await loop.run_in_executor(None, self.engine.tts.synthesize, text)
        except TtsError as error:
            self.handoff.emit("whisper_unavailable", reason=str(error))

    def on_answered(self, response: Response) -> None:
        human = self.human
        assert human is not None
        if self.finished:
            self.cleanup()
            return
        try:
            human.negotiation.accept(response.body)
        except SdpError as error:
            self.fail(f"the destination's answer is unusable: {error.reason}", 488)
            return
        self.handoff.progress("answered", sip_status=response.status)
        self._cancel_timer()  # the ring timeout is over; acceptance has its own
        self.engine.spawn(self._consult())

    async def _consult(self) -> None:
        human = self.human
        assert human is not None
        await self.whisper_synthesised()
        if self.finished:
            return
        if self.whisper is not None:
            self.handoff.progress("whispering")
            feed = human.media.play(Player(self.whisper))
            await feed.done
            if self.finished:
                return
            self.handoff.emit("whisper_done")
        if not await self._accepted():
            return
        if self.destination.connect == "replaces":
            self._connect_by_replaces()
        else:
            self.connect()

    # -- connecting with REFER + Replaces (RFC 3891) ----------------------------
    replacing: ReferSubscription | None = None

    def _connect_by_replaces(self) -> None:
        """Send the caller's phone to the human's dialog; bridge if that cannot work."""
        caller, consult = self.call.caller, self.session
        assert consult is not None and consult.dialog is not None
        if "replaces" not in caller.session.invite.supported:
            self.handoff.emit("replaces_unsupported", why="the caller's INVITE has no "
                                                          "Supported: replaces")
            self.connect()
            return
        dialog = consult.dialog
        replaces = quote(f"{dialog.call_id};to-tag={dialog.remote_tag};"
                         f"from-tag={dialog.local_tag}", safe="")
        refer_to = f"<{dialog.remote_target}?Replaces={replaces}>"
        referred_by = f"<{caller.session.local_party.uri}>"
        engine = self.engine
        self.replacing = engine.shell.run(lambda now: engine.shell.ua.refer(
            caller.session, refer_to, now, referred_by=referred_by,
            headers=[("X-Warmline-Handoff", self.handoff.id)]))
        engine.watch_refer(self.replacing, self)
        self.handoff.progress("replacing")
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.destination.timeout, self._replaces_failed,
                                      f"no final NOTIFY within {self.destination.timeout:g} s")

    def on_refer_response(self, status: int) -> None:
        if status >= 300:
            self._replaces_failed(f"REFER refused ({status})")

    def on_notify(self, status: int, final: bool) -> None:
        if not final:
            return
        if not 200 <= status < 300:
            self._replaces_failed(f"the caller's phone reports {status}")
            return
        self._cancel_timer()
        self.succeed("connected by REFER with Replaces")
        engine, caller, consult = self.engine, self.call.caller.session, self.session
        engine.shell.run(lambda now: engine.shell.ua.bye(caller, now))
        if consult is not None:  # the human's phone ends it; we make sure after a second
            asyncio.get_running_loop().call_later(1.0, self._end_consult, consult)
        self.handoff.finish("completed", "connected by REFER with Replaces", status)

    def _end_consult(self, consult: Session) -> None:
        if not consult.ended:
            self.engine.shell.run(lambda now: self.engine.shell.ua.bye(consult, now))

    def _replaces_failed(self, why: str) -> None:
        """Warm never turns blind: if Replaces fails, warmline bridges the consult itself."""
        self._cancel_timer()
        if self.replacing is not None:
            self.engine.unwatch_refer(self.replacing)
            self.replacing = None
        if self.finished:
            return
        self.handoff.emit("replaces_failed", why=why)
        self.connect()

    async def _accepted(self) -> bool:
        human, accept = self.human, self.destination.accept
        assert human is not None
        if accept == "none":
            return True
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[str] = loop.create_future()

        def settle(value: str) -> None:
            if not answer.done():
                answer.set_result(value)

        if accept == "dtmf":
            human.media.on_dtmf = settle
            self.engine.watch_digits(human.session, settle)
        else:
            human.media.detect_first_word(lambda at: settle("speech"))
        self.handoff.progress("awaiting_acceptance", by=accept)
        try:
            value = await asyncio.wait_for(answer, self.destination.accept_timeout)
        except TimeoutError:
            self.fail(f"the human did not accept within {self.destination.accept_timeout:g} s",
                      None)
            return False
        finally:
            human.media.on_dtmf = None
        if self.finished:
            return False
        if value not in ("1", "speech"):
            self.fail(f"the human declined (pressed {value})", None)
            return False
        self.handoff.emit("accepted_by_human", by=accept)
        return True

    def early_hangup(self) -> str:
        if self.handoff.status == "whispering":
            return "the human hung up during the whisper"
        return "the human hung up during the consultation"


class AttendedAttempt(WarmAttempt):
    """A brief 3-way call: the AI introduces the caller to the human, then drops out.

    The human's phone rings while the caller holds; on answer caller and
    human are joined in a mix-minus conference (each hears the other) and
    the AI's introduction is mixed in for both; when it ends the AI leaves
    and the two are bridged directly (the conference closes by itself).
    """

    conference: Conference | None = None

    async def _consult(self) -> None:
        human, caller = self.human, self.call.caller
        assert human is not None
        await self.whisper_synthesised()
        if self.finished:
            return
        conference = self.conference = Conference()
        caller.media.route_to(None)
        human.media.route_to(None)
        conference.join(caller.media)
        conference.join(human.media)
        self.handoff.progress("three_way")
        if self.whisper is not None:
            await conference.speak(Player(self.whisper))
        if self.finished:
            return
        self.handoff.emit("introduced")
        self.connect()  # routing the two to each other takes them out of the mix
        conference.close()

    def cleanup(self) -> None:
        if self.conference is not None:
            self.conference.close()
        super().cleanup()

    def early_hangup(self) -> str:
        return "the human hung up during the introduction"
