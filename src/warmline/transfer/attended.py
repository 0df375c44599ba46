"""Attended transfer: a brief 3-way call in which the AI introduces the caller, then drops.

The human's phone rings while the caller holds; on answer caller and human
are joined in a mix-minus conference (each hears the other) and the AI's
introduction is mixed in for both; when it ends the AI leaves and the two
are bridged directly.
"""

from __future__ import annotations

from warmline.media.player import Samples
from warmline.transfer.attempt import Attempt, Runner
from warmline.transfer.control import (
    CallControl,
    CallerHungUp,
    LegEnded,
    LegId,
    PlaybackEnded,
    PlaybackId,
    TransferEvent,
)
from warmline.transfer.dialing import HumanDial
from warmline.transfer.handoff import Destination, Handoff, HandoffStatus
from warmline.transfer.speech import PreparedSpeech


class AttendedAttempt(Attempt):
    """Join caller and human with the AI's introduction, then bridge them."""

    def __init__(self, control: CallControl, handoff: Handoff, destination: Destination,
                 runner: Runner) -> None:
        super().__init__(control, handoff, destination, runner)
        self.dial = HumanDial(control, handoff, destination, self._answered, self.fail)
        self.introduction = PreparedSpeech(control, handoff, "introduction",
                                           destination.whisper or handoff.whisper_text())
        self.playback: PlaybackId | None = None

    @property
    def human(self) -> LegId | None:
        return self.dial.leg

    def start(self) -> None:
        self.control.play_hold(self.control.caller)
        self.introduction.start()
        self.dial.start()

    def handle(self, event: TransferEvent) -> None:
        if self.bridged:
            self.handle_bridged(event)
            return
        if self.finished or self.introduction.handle(event) or self.dial.handle(event):
            return
        match event:
            case PlaybackEnded(playback=playback) if playback == self.playback:
                self._introduced()
            case LegEnded(leg=leg) if leg == self.human:
                self.fail("the human hung up during the introduction", None)
            case CallerHungUp():
                self.fail("caller hung up", None)

    def _answered(self) -> None:
        self.introduction.when_ready(self._join)

    def _join(self, introduction: Samples | None) -> None:
        if self.finished:
            return
        human = self.human
        assert human is not None
        self.playback = self.control.three_way(self.control.caller, human, introduction)
        self.handoff.progress(HandoffStatus.THREE_WAY)
        if self.playback is None:
            self._introduced()

    def _introduced(self) -> None:
        self.handoff.emit("introduced")
        self.bridge()  # routing the two to each other takes them out of the mix

    def release(self) -> None:
        self.introduction.cancel()
        self.dial.give_up()
