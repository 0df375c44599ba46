"""Transfers that consult the human first: warm (a whisper, acceptance) and attended (3-way).

Both dial the human like a bridge attempt while the caller holds, then talk
to the human before connecting: a warm attempt plays a whisper only the
human hears and may wait for the human to accept; an attended attempt joins
caller and human in a conference where the AI introduces the caller. A warm
attempt may hand the call over with REFER and Replaces (RFC 3891) instead of
bridging; if that fails, it bridges, so a warm transfer never turns blind.
"""

from __future__ import annotations

import asyncio
from urllib.parse import quote

from warmline.calls.transfer import BridgeAttempt
from warmline.media.conference import Conference
from warmline.media.player import Player, Samples
from warmline.media.tts import TtsError
from warmline.sip.session import ReferSubscription, Session

WHISPER_WAIT = 5.0  # seconds a human who answered waits at most for the whisper's TTS


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

    def answered(self) -> None:
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
