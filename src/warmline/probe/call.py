"""`warmline probe --call`: a short real call to the destination, with audio both ways.

An OPTIONS answer says a destination is there; only a call says it takes
calls from us and that audio flows. The test call offers G.711 from a leg of
the probe's own relay, plays a one-second 1 kHz tone on answer, counts the RTP
packets the far end sends to that leg, and hangs up. Every wait is bounded:
the answer by the probe's timeout (then CANCEL), the tone by its length, the
BYE by the timeout again.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from warmline.calls.trunks import Route
from warmline.media.negotiation import Negotiation
from warmline.media.player import Player, Samples
from warmline.media.relay import PlayerFeed, RelayLeg
from warmline.media.sdp import SdpError
from warmline.probe.checks import CallCheck, answer_codecs
from warmline.probe.line import CallEvents, ProbeLine
from warmline.sip.events import Target
from warmline.sip.session import CallAnswered, CallEnded, CallFailed, CallProgress, Session

CODECS = ["PCMU", "PCMA"]
TONE_HZ = 1000
TONE_SECONDS = 1.0
AUDIO_GRACE = 1.0  # after the tone, how long a first packet from the far end is waited for
CANCEL_GRACE = 1.0  # after a CANCEL, how long the 487 is waited for
_POLL = 0.05


def tone(rate: int = 8000, seconds: float = TONE_SECONDS, hz: int = TONE_HZ) -> Samples:
    """A sine at about -12 dBFS: loud enough to hear, far from clipping."""
    t = np.arange(int(rate * seconds)) / rate
    return np.round(np.sin(2 * np.pi * hz * t) * 0.25 * 32767).astype(np.int16)


class _Refused(Exception):
    """The INVITE ended without an answer; ``check`` says how."""

    def __init__(self, check: CallCheck) -> None:
        super().__init__(check.reason)
        self.check = check


class ShortCall:
    """One test call over ``line`` for ``route``; :meth:`run` returns what happened."""

    def __init__(self, line: ProbeLine, route: Route, timeout: float) -> None:
        self.line = line
        self.route = route
        self.timeout = timeout
        self.loop = asyncio.get_running_loop()
        self.progress: list[int] = []
        self.invited_at = 0.0  # perf_counter() when the INVITE went out

    async def run(self, targets: Sequence[Target]) -> CallCheck:
        """Call down ``targets`` (RFC 3263 failover), tone, count what comes back, BYE."""
        try:
            leg = await self.line.relay.open_leg("probe")
        except OSError as error:  # every port of the range taken: nothing was sent
            return CallCheck(500, f"no local RTP port: {error}", ended="not placed")
        negotiation = Negotiation(leg, self.line.media_address, CODECS)
        session = self._invite(negotiation.offer(), targets)
        events = self.line.watch(session)
        events.negotiation = negotiation
        try:
            answer, answer_ms = await self._answer(session, events)
            return await self._talk(session, events, leg, negotiation, answer, answer_ms)
        except _Refused as refused:
            return refused.check
        finally:
            self.line.forget(session)
            leg.close()

    def _invite(self, offer: bytes, targets: Sequence[Target]) -> Session:
        route, ua = self.route, self.line.shell.ua
        trunk = route.trunk
        caller_id = trunk.caller_id if trunk is not None and trunk.caller_id else None
        self.invited_at = time.perf_counter()
        return self.line.shell.run(lambda now: ua.invite(
            route.request_uri, now, sdp=offer, headers=route.headers, from_=caller_id,
            targets=targets, credentials=route.credentials))

    # ------------------------------------------------------------------ the answer
    async def _answer(self, session: Session, events: CallEvents) -> tuple[CallAnswered, float]:
        """The 2xx (and ms to it); _Refused on a final error or when none came in time."""
        deadline = self.loop.time() + self.timeout
        while True:
            event = await events.next(deadline - self.loop.time())
            if event is None:
                await self._give_up(session, events)
            elif isinstance(event, CallProgress):
                self.progress.append(event.response.status)
            elif isinstance(event, CallFailed):
                raise _Refused(CallCheck(event.status, event.reason,
                                         progress=tuple(self.progress), ended="refused"))
            elif isinstance(event, CallAnswered):
                return event, round((time.perf_counter() - self.invited_at) * 1000, 1)

    async def _give_up(self, session: Session, events: CallEvents) -> None:
        """CANCEL at the timeout and wait a moment for the 487, so nothing rings on."""
        self.line.shell.run(lambda now: self.line.shell.ua.cancel(session, now))
        grace_end = self.loop.time() + min(CANCEL_GRACE, self.timeout)
        while (left := grace_end - self.loop.time()) > 0:
            if isinstance(await events.next(left), CallFailed | CallEnded):
                break
        raise _Refused(CallCheck(408, f"not answered within {self.timeout:g} s",
                                 progress=tuple(self.progress), ended="cancelled"))

    # ------------------------------------------------------------------ the audio
    async def _talk(self, session: Session, events: CallEvents, leg: RelayLeg,
                    negotiation: Negotiation, answer: CallAnswered,
                    answer_ms: float) -> CallCheck:
        response = answer.response
        answered = CallCheck(response.status, response.reason, True, tuple(self.progress),
                             answer_ms, answer_codecs(session.remote_sdp))
        try:
            stream = negotiation.accept(session.remote_sdp or b"")
        except SdpError as error:
            ended = await self._hang_up(session, events)
            return replace(answered, problem=f"its SDP answer is unusable: {error.reason}",
                         ended=ended)
        ended_early = await self._play_and_listen(events, leg.play(Player(tone())), leg)
        counters = leg.counters
        ended = ended_early or await self._hang_up(session, events)
        return replace(answered, codec=stream.codec.name, tone_ms=counters.sent * stream.ptime,
                       packets_sent=counters.sent, packets_received=counters.received,
                       ended=ended)

    async def _play_and_listen(self, events: CallEvents, playback: PlayerFeed,
                               leg: RelayLeg) -> str | None:
        """Until the tone is out and something came back (or the grace ran out).

        Returns how the call ended if the far end hung up meanwhile, else None.
        """
        tone_end = self.loop.time() + TONE_SECONDS + 0.5
        grace_end = tone_end + AUDIO_GRACE
        while self.loop.time() < grace_end:
            if playback.done.done() and leg.counters.received > 0:
                return None
            if isinstance(await events.next(_POLL), CallEnded):
                playback.stop()
                return "the far end hung up during the test"
            if self.loop.time() > tone_end:
                playback.stop()
        return None

    async def _hang_up(self, session: Session, events: CallEvents) -> str:
        self.line.shell.run(lambda now: self.line.shell.ua.bye(session, now))
        deadline = self.loop.time() + self.timeout
        while (left := deadline - self.loop.time()) > 0:
            event = await events.next(left)
            if isinstance(event, CallEnded):
                return "BYE answered" if not event.by_remote else "the far end hung up first"
        return f"BYE sent, no answer within {self.timeout:g} s"
