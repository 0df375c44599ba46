"""The chain of one handoff: announce, try each destination, fall back, never drop the caller.

A handoff runs as a chain of steps on one call: an announcement to the
caller if asked for, the first destination, then each fallback in turn
(other destinations, voicemail, a callback, a ticket) and back to the AI
when none is left. A blind attempt whose REFER is refused is re-originated
at once as a bridge to the same destination. Once a human is bridged the
attempt stays in place: when the human hangs up the call ends (a final
handoff) or the caller goes back to the AI (a temporary one). Another AI
agent (mode agent, transfer/agent.py) is followed the same way.

Like the attempts it runs, the chain is driven only by events through a
:class:`CallControl`, so every ordering can be tested without sockets.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import Enum

from warmline.calls.call import CallState
from warmline.transfer.agent import AgentAttempt
from warmline.transfer.attempt import Attempt
from warmline.transfer.attended import AttendedAttempt
from warmline.transfer.blind import BlindAttempt
from warmline.transfer.bridge import BridgeAttempt
from warmline.transfer.control import CallControl, CallerHungUp, TransferEvent
from warmline.transfer.fallbacks import (
    CallbackPromise,
    Ending,
    FallbackStep,
    Ticket,
    Voicemail,
)
from warmline.transfer.handoff import (
    Destination,
    FallbackAction,
    FallbackKind,
    Handoff,
    HandoffStatus,
    TransferMode,
)
from warmline.transfer.speech import Utterance
from warmline.transfer.warm import WarmAttempt

ATTEMPTS: dict[TransferMode, type[Attempt]] = {
    TransferMode.BLIND: BlindAttempt, TransferMode.BRIDGE: BridgeAttempt,
    TransferMode.WARM: WarmAttempt, TransferMode.ATTENDED: AttendedAttempt,
    TransferMode.AGENT: AgentAttempt}
FALLBACKS: dict[FallbackKind, type[FallbackStep]] = {
    FallbackKind.VOICEMAIL: Voicemail, FallbackKind.CALLBACK: CallbackPromise,
    FallbackKind.TICKET: Ticket}
RETURN_ANNOUNCEMENT = "I am sorry, nobody could take your call right now. I am back with you."

ReturnHandler = Callable[[str, float], None]  # why, seconds away from the AI


class Stage(Enum):
    ANNOUNCING = "announcing"  # telling the caller what happens next
    ATTEMPTING = "attempting"  # an attempt runs (or a bridge it made is in place)
    FALLING_BACK = "falling back"  # voicemail, a callback, a ticket
    RETURNING = "returning"  # telling the caller the AI is back
    ENDED = "ended"


class HandoffRun:
    """Runs ``handoff`` on the call behind ``control``; ``returned`` hears of a return to the AI."""

    def __init__(self, control: CallControl, handoff: Handoff, returned: ReturnHandler,
                 return_announcement: str | None = RETURN_ANNOUNCEMENT) -> None:
        self.control = control
        self.handoff = handoff
        self.returned = returned
        self.return_announcement = return_announcement
        self.stage = Stage.ANNOUNCING
        self.steps = handoff.steps()
        self.attempt: Attempt | None = None
        self.fallback: FallbackStep | None = None
        self.speech: Utterance | None = None

    @property
    def over(self) -> bool:
        """Nothing left to do: the caller is with the AI again, or gone, or served."""
        return self.stage is Stage.ENDED

    @property
    def agent_has_the_call(self) -> bool:
        """Another agent took the call and settled: it may ask for a handoff of its own."""
        attempt = self.attempt
        return (self.stage is Stage.ATTEMPTING and isinstance(attempt, AgentAttempt)
                and attempt.finished and not attempt.ended)

    def release(self) -> None:
        """The call is forgotten: the run lets go of its attempt and fallback (each holds
        the run back), so nothing of it waits for a full garbage collection."""
        if self.attempt is not None:
            self.attempt.untie()
        self.attempt = None
        if self.fallback is not None:
            self.fallback.untie()
        self.fallback = None
        self.speech = None

    def hand_on(self, later: Handoff) -> None:
        """The agent that has the call asked for ``later``: this handoff is complete, its
        agent let go (``later``'s run takes the call from here)."""
        attempt = self.attempt
        assert isinstance(attempt, AgentAttempt)
        self.stage = Stage.ENDED
        attempt.release()
        self.handoff.emit("handed_on", handoff_id=later.id)
        self.handoff.finish(HandoffStatus.COMPLETED, "the agent handed the call on")

    def start(self) -> None:
        self.control.set_state(CallState.TRANSFERRING)
        announce = self.handoff.announce
        if announce:
            self._say("announce", announce, self._announced)
        else:
            self._begin()

    def handle(self, event: TransferEvent) -> None:
        if self.stage in (Stage.ANNOUNCING, Stage.RETURNING):
            speech = self.speech
            if speech is not None and not speech.handle(event) and \
                    isinstance(event, CallerHungUp):
                speech.abandon()
        elif self.stage is Stage.ATTEMPTING and self.attempt is not None:
            self.attempt.handle(event)  # a bridge it made, or its late events, included
        elif self.stage is Stage.FALLING_BACK and self.fallback is not None:
            self.fallback.handle(event)

    # -- the chain ---------------------------------------------------------------
    def _announced(self) -> None:
        self.handoff.emit("announced", text=self.handoff.announce)
        if self.control.caller_gone:
            self.stage = Stage.ENDED
            self.handoff.finish(HandoffStatus.FAILED, "caller hung up")
        else:
            self._begin()

    def _begin(self) -> None:
        first = self.handoff.first
        if first is None:
            self.handoff.reason = self.handoff.reason or "no destination open"
            self._next_step()
        else:
            self._try(first)

    def _try(self, destination: Destination) -> None:
        self.stage = Stage.ATTEMPTING
        self.handoff.attempt = destination
        self.attempt = ATTEMPTS[destination.mode](self.control, self.handoff, destination,
                                                  self)
        self.handoff.emit("attempt", to=destination.uri, mode=destination.mode,
                          timeout=destination.timeout)
        self.attempt.start()

    def _next_step(self) -> None:
        """The handoff's next fallback; when none is left (or "ai"), back to the AI."""
        handoff = self.handoff
        while self.steps:
            step = self.steps.pop(0)
            if isinstance(step, Destination):
                handoff.emit("fallback", to=step.uri, mode=step.mode, why=handoff.reason)
                self._try(step)
                return
            handoff.emit("fallback", action=step.kind, why=handoff.reason)
            if step.kind is not FallbackKind.AI:
                self._fall_back(step)
                return
            break
        why = handoff.reason or "transfer failed"
        handoff.finish(HandoffStatus.FAILED, why, handoff.sip_status)
        self._announce_and_return(why)

    def _fall_back(self, action: FallbackAction) -> None:
        self.stage = Stage.FALLING_BACK
        self.fallback = FALLBACKS[action.kind](self.control, self.handoff, action, self)
        self.fallback.start()

    # -- what attempts and fallbacks report (attempt.Runner, fallbacks.Finisher) -----
    def attempt_succeeded(self, attempt: Attempt) -> None:
        if attempt.human is not None:
            self.control.set_state(CallState.HUMAN)

    def attempt_failed(self, attempt: Attempt) -> None:
        handoff = self.handoff
        if self.control.caller_gone:
            self.stage = Stage.ENDED
            handoff.finish(HandoffStatus.FAILED, "caller hung up", handoff.sip_status)
            return
        if attempt.refused_refer:  # the far side will not transfer: re-originate
            destination = attempt.destination
            handoff.emit("fallback", to=destination.uri, mode=TransferMode.BRIDGE,
                         why=f"REFER refused ({handoff.sip_status})")
            self._try(Destination(destination.uri, TransferMode.BRIDGE, destination.timeout))
            return
        self._next_step()

    def human_left(self, attempt: Attempt) -> None:
        """The human hung up: the call ends (final) or the caller goes back to the AI."""
        handoff, control = self.handoff, self.control
        if control.caller_gone:
            return
        if handoff.final:
            self.stage = Stage.ENDED
            handoff.finish(HandoffStatus.COMPLETED, "the human hung up")
            control.hang_up(control.caller)
            return
        self._back_to_ai("the human hung up", time.time() - handoff.events[0].at)

    def agent_left(self, attempt: Attempt, handed_back: bool) -> None:
        """Another agent that had the call ended its part: the call ends (final, and it
        ended on purpose) or the caller goes back to the first AI (temporary, or it
        dropped: a caller is never left with nobody)."""
        handoff, control = self.handoff, self.control
        if control.caller_gone:
            return
        if handed_back and handoff.final:
            self.stage = Stage.ENDED
            handoff.finish(HandoffStatus.COMPLETED, "the agent ended the call")
            control.hang_up(control.caller)
            return
        why = "the agent handed the caller back" if handed_back else "the agent dropped"
        self._back_to_ai(why, time.time() - handoff.events[0].at)

    def caller_left_human(self, attempt: Attempt) -> None:
        self.stage = Stage.ENDED
        if attempt.human is not None:
            self.control.hang_up(attempt.human)
        self.handoff.finish(HandoffStatus.COMPLETED, "the caller hung up after the connection")

    def fallback_done(self, ending: Ending) -> None:
        if ending is Ending.BACK_TO_AI:
            self._announce_and_return(self.handoff.reason or "ticket")
        else:
            self.stage = Stage.ENDED

    # -- back to the AI ------------------------------------------------------------
    def _announce_and_return(self, why: str) -> None:
        """Tell the caller nobody could be reached (no silence), then hand back to the AI."""
        self.control.set_state(CallState.AI)
        text = self.return_announcement
        if not text or self.control.caller_gone:
            self._returned_after_announcement(why, announced=False)
            return
        self.stage = Stage.RETURNING
        self._say("return", text, lambda: self._returned_after_announcement(why))

    def _returned_after_announcement(self, why: str, announced: bool = True) -> None:
        if announced:
            self.handoff.emit("announced", text=self.return_announcement)
        if self.control.caller_gone:
            self.stage = Stage.ENDED
        else:
            self._back_to_ai(why, 0.0)

    def _back_to_ai(self, why: str, away: float) -> None:
        self.stage = Stage.ENDED
        control, handoff = self.control, self.handoff
        control.set_state(CallState.AI)
        control.detach(control.caller)
        handoff.emit("returned_to_ai", why=why, seconds_away=round(away, 3))
        handoff.finish(HandoffStatus.COMPLETED, f"back to the AI: {why}")
        self.returned(why, away)

    def _say(self, key: str, text: str, then: Callable[[], None]) -> None:
        self.speech = Utterance(self.control, self.control.caller, key, text, then)
        self.speech.start()
