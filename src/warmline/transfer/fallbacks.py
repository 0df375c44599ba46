"""Where a caller goes when no human could be reached: voicemail, a callback, a ticket.

Each ends with the caller served, never in silence. Voicemail plays a
prompt and a tone, records what the caller says (until they hang up or the
limit), thanks them and hangs up. A callback is kept durably with its time,
announced to the caller with that time, and the call ends politely. A
ticket posts the context packet to the webhook and the caller goes back to
the AI. Like attempts, these are state machines driven by events.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from enum import Enum
from typing import Protocol

import numpy as np

from warmline.media.player import Samples
from warmline.transfer.control import (
    CallControl,
    CallerHungUp,
    TimerFired,
    TransferEvent,
    WebhookDone,
    WebhookKind,
)
from warmline.transfer.handoff import FallbackAction, Handoff, HandoffStatus
from warmline.transfer.speech import Utterance

VOICEMAIL_TIMER = "voicemail"
_TONE = (np.sin(2 * np.pi * 1000 * np.arange(3200) / 8000) * 8000).astype(np.int16)
PROMPT = "Nobody can take your call right now. Please leave a message after the tone."
THANKS = "Thank you. Goodbye."


class Ending(Enum):
    """How a fallback left the caller."""

    HUNG_UP = "hung up"  # served and the call ended (or the caller left)
    BACK_TO_AI = "back to the AI"


class Finisher(Protocol):
    def fallback_done(self, ending: Ending) -> None: ...


class FallbackStep(ABC):
    def __init__(self, control: CallControl, handoff: Handoff, action: FallbackAction,
                 runner: Finisher) -> None:
        self.control = control
        self.handoff = handoff
        self.action = action
        self.runner = runner

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def handle(self, event: TransferEvent) -> None: ...

    def untie(self) -> None:
        """The call is forgotten: the step's line lets go of the step (the pair is a cycle
        that holds the run, its control and the call)."""
        speech = getattr(self, "speech", None)  # the steps that speak; set once they have
        if isinstance(speech, Utterance):
            speech.untie()


class VoicemailStage(Enum):
    PROMPT = "prompt"
    RECORDING = "recording"
    THANKS = "thanks"
    DONE = "done"


class Voicemail(FallbackStep):
    """Prompt, tone, record to ``<records>/voicemail/<handoff>.wav``, thank, hang up."""

    stage = VoicemailStage.PROMPT
    speech: Utterance

    def start(self) -> None:
        self.handoff.emit("voicemail_started", max_seconds=self.action.max_seconds)
        self._say("voicemail-prompt", PROMPT, self._record, extra=_TONE)

    def handle(self, event: TransferEvent) -> None:
        if self.speech.handle(event):
            return
        match event:
            case TimerFired(key=key) if key == VOICEMAIL_TIMER:
                if self.stage is VoicemailStage.RECORDING:
                    self._save()
            case CallerHungUp():
                self._caller_left()

    def _say(self, key: str, text: str, then: Callable[[], None],
             extra: Samples | None = None) -> None:
        self.speech = Utterance(self.control, self.control.caller, key, text, then, extra)
        self.speech.start()

    def _record(self) -> None:
        if self.stage is not VoicemailStage.PROMPT:
            return
        self.stage = VoicemailStage.RECORDING
        self.control.start_recording(self.control.caller)
        if self.control.caller_gone:
            self._save()
            return
        self.control.set_timer(VOICEMAIL_TIMER, self.action.max_seconds)

    def _caller_left(self) -> None:
        if self.stage is VoicemailStage.PROMPT:
            self.speech.abandon()  # records nothing, then saves
        elif self.stage is VoicemailStage.RECORDING:
            self._save()
        elif self.stage is VoicemailStage.THANKS:
            self.speech.abandon()

    def _save(self) -> None:
        self.control.cancel_timer(VOICEMAIL_TIMER)
        path, seconds = self.control.save_recording(self.control.caller, self.handoff.id)
        self.handoff.emit("voicemail_saved", path=path, seconds=round(seconds, 2))
        self.handoff.finish(HandoffStatus.COMPLETED, "voicemail recorded",
                            self.handoff.sip_status)
        if self.control.caller_gone:
            self._done()
            return
        self.stage = VoicemailStage.THANKS
        self._say("voicemail-thanks", THANKS, self._hang_up)

    def _hang_up(self) -> None:
        if not self.control.caller_gone:
            self.control.hang_up(self.control.caller)
        self._done()

    def _done(self) -> None:
        self.stage = VoicemailStage.DONE
        self.runner.fallback_done(Ending.HUNG_UP)


class CallbackPromise(FallbackStep):
    """Keep a callback with its time, tell the caller when, and end the call."""

    speech: Utterance

    def start(self) -> None:
        action, handoff = self.action, self.handoff
        at = action.at if action.at is not None else time.time() + action.delay_seconds
        self.control.save_callback(handoff, at)
        handoff.emit("callback_scheduled", callback_at=at,
                     number=self.control.caller_facts.number)
        handoff.finish(HandoffStatus.COMPLETED, "callback scheduled", handoff.sip_status)
        when = time.strftime("%H:%M", time.localtime(at))
        self.speech = Utterance(self.control, self.control.caller, "callback",
                                f"Nobody can take your call right now. We will call you "
                                f"back at {when}. Goodbye.", self._hang_up)
        self.speech.start()

    def handle(self, event: TransferEvent) -> None:
        if not self.speech.handle(event) and isinstance(event, CallerHungUp):
            self.speech.abandon()

    def _hang_up(self) -> None:
        if not self.control.caller_gone:
            self.control.hang_up(self.control.caller)
        self.runner.fallback_done(Ending.HUNG_UP)


class Ticket(FallbackStep):
    """Open a ticket with the packet at the webhook; then back to the AI."""

    def start(self) -> None:
        self.control.deliver_webhook(self.handoff, WebhookKind.TICKET)

    def handle(self, event: TransferEvent) -> None:
        if isinstance(event, WebhookDone) and event.kind is WebhookKind.TICKET:
            reason = "ticket opened" if event.delivered else "ticket not delivered"
            self.handoff.finish(HandoffStatus.COMPLETED, reason)
            self.runner.fallback_done(Ending.BACK_TO_AI)
