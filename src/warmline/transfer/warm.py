"""Warm transfer: the human hears a whisper (and may have to accept) before the caller.

The caller holds while the human's phone rings; the whisper is synthesised
meanwhile, so it starts the moment the human answers. Only the human hears
it. With acceptance asked for, the human presses 1 (any other digit
declines) or speaks first; a decline, silence past ``accept_timeout`` or a
hang-up during the consultation fails the attempt and the fallback runs,
the caller still holding. Then the two are bridged, or, with ``connect``
REPLACES and a caller's phone that supports it, the caller's phone is sent
to the human with REFER and Replaces (RFC 3891). Warm never turns blind: if
Replaces fails while the human is still on the line, warmline bridges.

The human's phone ends the consultation dialog itself once the caller's
INVITE with Replaces arrives, often before the caller's phone sends the
final NOTIFY: that BYE is expected while replacing, not a hang-up.
"""

from __future__ import annotations

from enum import Enum

from warmline.media.player import Samples
from warmline.transfer.attempt import Attempt, Runner
from warmline.transfer.blind import REPORT_GRACE
from warmline.transfer.control import (
    CallControl,
    CallerHungUp,
    DigitPressed,
    LegEnded,
    LegId,
    PlaybackEnded,
    PlaybackId,
    ReferAnswered,
    ReferId,
    ReferNotified,
    SpeechStarted,
    TimerFired,
    TransferEvent,
)
from warmline.transfer.dialing import HumanDial
from warmline.transfer.handoff import (
    HANDOFF_HEADER,
    Acceptance,
    ConnectBy,
    Destination,
    Handoff,
    HandoffStatus,
)
from warmline.transfer.identity import with_uri_header
from warmline.transfer.speech import PreparedSpeech

ACCEPT_TIMER = "accept"
REPLACES_TIMER = "replaces"
CONSULT_TIMER = "consult-bye"
CONSULT_GRACE = 1.0  # seconds the human's phone has to end the replaced dialog itself


class WarmStage(Enum):
    DIALING = "dialing"
    PREPARING = "preparing"  # answered; the whisper's TTS is not ready yet
    WHISPERING = "whispering"
    AWAITING = "awaiting"  # acceptance by DTMF or speech
    REPLACING = "replacing"
    DONE = "done"  # bridged, replaced, or failed


class WarmAttempt(Attempt):
    """Consult the human first: the caller holds, the human hears a whisper, then connect."""

    def __init__(self, control: CallControl, handoff: Handoff, destination: Destination,
                 runner: Runner) -> None:
        super().__init__(control, handoff, destination, runner)
        self.dial = HumanDial(control, handoff, destination, self._answered, self.fail)
        self.whisper = PreparedSpeech(control, handoff, "whisper",
                                      destination.whisper or handoff.whisper_text())
        self.stage = WarmStage.DIALING
        self.playback: PlaybackId | None = None
        self.replacing: ReferId | None = None
        self.consult_ended = False  # the human's phone ended the consultation dialog
        self.caller_left = False  # the caller's phone ended our call before its final NOTIFY

    @property
    def human(self) -> LegId | None:
        return self.dial.leg

    def start(self) -> None:
        self.control.play_hold(self.control.caller)
        self.whisper.start()
        self.dial.start()

    def handle(self, event: TransferEvent) -> None:
        if self.bridged:
            self.handle_bridged(event)
            return
        if self.whisper.handle(event) or self.dial.handle(event):
            return
        if self.stage is WarmStage.REPLACING:
            self._while_replacing(event)
        elif self.finished:
            self._after_replaced(event)
        else:
            self._while_consulting(event)

    def _while_consulting(self, event: TransferEvent) -> None:
        human = self.human
        match event:
            case PlaybackEnded(playback=playback) if playback == self.playback:
                if self.stage is WarmStage.WHISPERING:
                    self.handoff.emit("whisper_done")
                    self._ask_acceptance()
            case DigitPressed(leg=leg, digit=digit) if leg == human:
                if self.stage is WarmStage.AWAITING and \
                        self.destination.accept is Acceptance.DTMF:
                    self._decided(digit)
            case SpeechStarted(leg=leg) if leg == human:
                if self.stage is WarmStage.AWAITING and \
                        self.destination.accept is Acceptance.SPEECH:
                    self._decided("speech")
            case TimerFired(key=key) if key == ACCEPT_TIMER:
                if self.stage is WarmStage.AWAITING:
                    self.fail(f"the human did not accept within "
                              f"{self.destination.accept_timeout:g} s", None)
            case LegEnded(leg=leg) if leg == human:
                self.fail(self._early_hangup(), None)
            case CallerHungUp():
                self.fail("caller hung up", None)

    # -- consulting ------------------------------------------------------------
    def _answered(self) -> None:
        self.stage = WarmStage.PREPARING
        self.whisper.when_ready(self._whisper_ready)

    def _whisper_ready(self, audio: Samples | None) -> None:
        if self.finished:
            return
        human = self.human
        assert human is not None
        if audio is None:
            self._ask_acceptance()
            return
        self.stage = WarmStage.WHISPERING
        self.handoff.progress(HandoffStatus.WHISPERING)
        self.playback = self.control.play(human, audio)

    def _ask_acceptance(self) -> None:
        human, accept = self.human, self.destination.accept
        assert human is not None
        if accept is Acceptance.NONE:
            self._connect()
            return
        self.stage = WarmStage.AWAITING
        if accept is Acceptance.DTMF:
            self.control.watch_digits(human, True)
        else:
            self.control.detect_speech(human)
        self.handoff.progress(HandoffStatus.AWAITING_ACCEPTANCE, by=accept)
        self.control.set_timer(ACCEPT_TIMER, self.destination.accept_timeout)

    def _decided(self, answer: str) -> None:
        human = self.human
        assert human is not None
        self.control.cancel_timer(ACCEPT_TIMER)
        self.control.watch_digits(human, False)
        if answer not in ("1", "speech"):
            self.fail(f"the human declined (pressed {answer})", None)
            return
        self.handoff.emit("accepted_by_human", by=self.destination.accept)
        self._connect()

    def _early_hangup(self) -> str:
        if self.stage is WarmStage.WHISPERING:
            return "the human hung up during the whisper"
        return "the human hung up during the consultation"

    # -- connecting ------------------------------------------------------------
    def _connect(self) -> None:
        if self.destination.connect is not ConnectBy.REPLACES:
            self._bridge()
            return
        if not self.control.caller_facts.supports_replaces:
            self.handoff.emit("replaces_unsupported",
                              why="the caller's INVITE has no Supported: replaces")
            self._bridge()
            return
        human = self.human
        assert human is not None
        self.stage = WarmStage.REPLACING
        target = with_uri_header(self.control.replaces_target(human), HANDOFF_HEADER,
                                 self.handoff.id)  # the human's side can match its context
        self.replacing = self.control.refer(self.control.caller, target,
                                            [(HANDOFF_HEADER, self.handoff.id)])
        self.handoff.progress(HandoffStatus.REPLACING)
        self.control.set_timer(REPLACES_TIMER, self.destination.timeout)

    def _bridge(self) -> None:
        self.stage = WarmStage.DONE
        self.bridge()

    def _while_replacing(self, event: TransferEvent) -> None:
        match event:
            case ReferAnswered(refer=refer, status=status) if refer == self.replacing:
                if status >= 300:
                    self._replaces_failed(f"REFER refused ({status})", status)
            case ReferNotified(refer=refer, status=status, final=True) \
                    if refer == self.replacing:
                if 200 <= status < 300:
                    self._replaced(status)
                else:
                    self._replaces_failed(f"the caller's phone reports {status}", status)
            case LegEnded(leg=leg) if leg == self.human:
                self.consult_ended = True  # replaced by the caller's INVITE, as expected
            case TimerFired(key=key) if key == REPLACES_TIMER:
                self._replaces_failed(f"no final NOTIFY within {self.destination.timeout:g} s",
                                      408)
            case CallerHungUp():
                # the caller's phone may hang up on us as soon as its INVITE with Replaces
                # is answered, before its final NOTIFY: the subscription outlives the call
                self.caller_left = True
                self.control.set_timer(REPLACES_TIMER, REPORT_GRACE)

    def _replaced(self, status: int) -> None:
        self.stage = WarmStage.DONE
        self.control.cancel_timer(REPLACES_TIMER)
        self.succeed("connected by REFER with Replaces")
        if not self.caller_left:
            self.control.hang_up(self.control.caller)
        if not self.consult_ended:  # the human's phone ends it; we make sure after a moment
            self.control.set_timer(CONSULT_TIMER, CONSULT_GRACE)
        self.handoff.finish(HandoffStatus.COMPLETED, "connected by REFER with Replaces", status)

    def _replaces_failed(self, why: str, status: int | None) -> None:
        """Bridge the consultation instead, unless the human's line has gone meanwhile."""
        self.control.cancel_timer(REPLACES_TIMER)
        self.replacing = None
        if self.caller_left:
            self.fail("caller hung up", status)
            return
        if self.consult_ended:
            self.fail(f"{why}; the human's line has ended", status)
            return
        self.handoff.emit("replaces_failed", why=why)
        self._bridge()

    def _after_replaced(self, event: TransferEvent) -> None:
        """Replaced: make sure the consultation dialog ends (its BYE may not come)."""
        human = self.human
        match event:
            case TimerFired(key=key) if key == CONSULT_TIMER and human is not None:
                if not self.consult_ended:
                    self.control.hang_up(human)
            case LegEnded(leg=leg) if leg == human:
                self.consult_ended = True
                self.control.cancel_timer(CONSULT_TIMER)

    def release(self) -> None:
        self.stage = WarmStage.DONE
        self.whisper.cancel()
        self.control.cancel_timer(ACCEPT_TIMER)
        self.control.cancel_timer(REPLACES_TIMER)
        human = self.human
        if human is not None:
            self.control.watch_digits(human, False)
        self.dial.give_up()
