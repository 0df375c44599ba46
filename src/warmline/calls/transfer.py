"""Transfer attempts: blind (REFER tracked to a real outcome) and bridge (re-origination).

Warm and attended transfers build on the bridge attempt (consult.py).

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

from warmline.calls.handoff import Destination, Handoff
from warmline.calls.identity import identity_headers, with_uri_header
from warmline.calls.leg import CallLeg
from warmline.media.negotiation import Negotiation
from warmline.media.player import Player, ringback
from warmline.media.sdp import SdpError
from warmline.sip.message import Response
from warmline.sip.session import ReferSubscription, Session

if TYPE_CHECKING:
    from warmline.calls.engine import Call, CallEngine

REFER_REFUSALS = frozenset({403, 405, 420, 489, 501, 603})


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
        uui = dict(engine.context_headers(self.handoff)).get("User-to-User")
        if uui is not None:  # RFC 7434: UUI for the transferee's INVITE rides in Refer-To
            target = with_uri_header(target, "User-to-User", uui)
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
        if self.destination.probe:
            status = await engine.probe(self.destination.uri)
            self.handoff.emit("probed", to=self.destination.uri, sip_status=status)
            if not 200 <= status < 300:
                self.fail(f"not available: OPTIONS answered {status}", status)
                return
            if self.finished:
                return
        media = await engine.relay.open_leg("human")
        if self.finished:
            media.close()
            return
        negotiation = Negotiation(media, engine.media_address, engine.codecs)
        caller_codec = caller.negotiation.stream.codec.name if caller.negotiation.stream \
            else engine.codecs[0]
        offer = negotiation.offer(codecs=[caller_codec] + [
            name for name in engine.codecs if name.lower() != caller_codec.lower()])
        await engine.deliver_webhook(self.handoff)  # the desktop knows before the phone rings
        if self.finished:
            media.close()
            return
        identity, headers = identity_headers(caller.session, self.handoff.caller_id,
                                             self.destination.uri)
        headers[:0] = engine.context_headers(self.handoff)
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
        self.answered()

    def answered(self) -> None:
        """The human's phone answered and its SDP is applied: connect at once."""
        self.connect()

    def connect(self) -> None:
        """Bridge the caller and the human; the AI leaves the media path."""
        human, caller = self.human, self.call.caller
        assert human is not None
        human.media.detect_first_word(self._first_word)
        caller.media.on_dtmf = None  # digits now go to the human (and the pair may go compiled)
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
