"""What every attempt at a destination shares: the outcome it reports once, and the bridge.

An attempt is a state machine: :meth:`Attempt.start`, then :meth:`Attempt.handle`
for each event, in any order the network produces. It reports to the runner
exactly once whether it reached the human (``attempt_succeeded``) or not
(``attempt_failed``, with the reason and the SIP status on the handoff);
whatever it held (a leg being dialled, a REFER) is released on failure. A
bridged attempt stays in place after success: it hears the human or the
caller leave and tells the runner.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Protocol

from warmline.transfer.control import (
    CallControl,
    CallerHungUp,
    LegEnded,
    LegId,
    SpeechStarted,
    TransferEvent,
)
from warmline.transfer.dialing import HumanDial
from warmline.transfer.handoff import Destination, Handoff, HandoffStatus


class Runner(Protocol):
    """Who an attempt reports to (the handoff's chain, runner.py)."""

    def attempt_succeeded(self, attempt: Attempt) -> None: ...

    def attempt_failed(self, attempt: Attempt) -> None: ...

    def human_left(self, attempt: Attempt) -> None: ...

    def caller_left_human(self, attempt: Attempt) -> None: ...

    def agent_left(self, attempt: Attempt, handed_back: bool) -> None:
        """Another agent that had the call ended its part (``handed_back``) or dropped."""


class Attempt(ABC):
    """One destination tried for a handoff."""

    def __init__(self, control: CallControl, handoff: Handoff, destination: Destination,
                 runner: Runner) -> None:
        self.control = control
        self.handoff = handoff
        self.destination = destination
        self.runner = runner
        self.finished = False  # succeeded or failed: reported to the runner
        self.bridged = False  # caller and human are talking through warmline
        self.refused_refer = False  # blind: the REFER itself was refused (re-originate)

    @property
    def human(self) -> LegId | None:
        """The leg to the human this attempt dialled, if any."""
        return None

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def handle(self, event: TransferEvent) -> None: ...

    def succeed(self, reason: str) -> None:
        if self.finished:
            return
        self.finished = True
        self.runner.attempt_succeeded(self)
        self.handoff.emit("attempt_succeeded", to=self.destination.uri, reason=reason)

    def fail(self, reason: str, status: int | None) -> None:
        if self.finished:
            return
        self.finished = True
        self.release()
        self.untie()
        self.handoff.emit("attempt_failed", to=self.destination.uri,
                          mode=self.destination.mode, reason=reason, sip_status=status)
        self.handoff.reason, self.handoff.sip_status = reason, status
        self.runner.attempt_failed(self)

    @abstractmethod
    def release(self) -> None:
        """Let go of whatever the attempt holds (a leg being dialled, timers)."""

    def untie(self) -> None:
        """The attempt is over for good (failed, or its call forgotten): its dial lets go of
        the attempt's own methods. The pair is a cycle holding the run and the call, and
        one older than a second is frozen (heap.py): only a full collection would free it."""
        dial = getattr(self, "dial", None)  # the attempts that dial the human themselves
        if isinstance(dial, HumanDial):
            dial.untie()

    # -- the bridge, shared by the attempts that dial the human themselves --------
    def bridge(self) -> None:
        """Caller and human hear each other; the AI leaves the media path."""
        human = self.human
        assert human is not None
        self.control.bridge(self.control.caller, human)
        self.control.detect_speech(human)
        self.bridged = True
        self.succeed("connected")
        self.handoff.progress(HandoffStatus.CONNECTED)

    def handle_bridged(self, event: TransferEvent) -> bool:
        """Events once bridged: the human's first word, either side leaving. True: taken."""
        human = self.human
        match event:
            case SpeechStarted(leg=leg) if leg == human:
                self.handoff.emit("human_first_word")
            case LegEnded(leg=leg) if leg == human:
                self.runner.human_left(self)
            case CallerHungUp():
                self.runner.caller_left_human(self)
            case _:
                return False
        return True
