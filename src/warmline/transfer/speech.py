"""Speech inside a transfer: a whisper prepared ahead, and sentences said to the caller.

Text-to-speech takes a moment, and a human who has just answered must not
wait in silence: :class:`PreparedSpeech` starts synthesising while the
phone rings and, when the audio is needed, waits for it at most
``WAIT_SECONDS`` (then goes on without it). :class:`Utterance` says one
sentence to a leg and reports when it has been played out; a TTS failure
or a caller who left ends it at once, so nothing waits forever.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from warmline.media.player import Samples
from warmline.transfer.control import (
    CallControl,
    LegId,
    PlaybackEnded,
    PlaybackId,
    SpeechReady,
    TimerFired,
    TransferEvent,
)
from warmline.transfer.handoff import Handoff

WAIT_SECONDS = 5.0  # how long a human who answered waits at most for the whisper's TTS


class PreparedSpeech:
    """``text`` synthesised ahead; :meth:`when_ready` hands it over (None if unavailable)."""

    def __init__(self, control: CallControl, handoff: Handoff, key: str, text: str) -> None:
        self.control = control
        self.handoff = handoff
        self.key = key
        self.text = text
        self.audio: Samples | None = None
        self.settled = False  # synthesised, failed, or given up on
        self._waiting: Callable[[Samples | None], None] | None = None

    @property
    def _timer(self) -> str:
        return f"{self.key}-wait"

    def start(self) -> None:
        self.control.synthesize(self.key, self.text)

    def when_ready(self, then: Callable[[Samples | None], None]) -> None:
        if self.settled:
            then(self.audio)
            return
        self._waiting = then
        self.control.set_timer(self._timer, WAIT_SECONDS)

    def handle(self, event: TransferEvent) -> bool:
        match event:
            case SpeechReady(key=key, audio=audio, error=error) if key == self.key:
                if not self.settled:
                    if audio is None:
                        self.handoff.emit("whisper_unavailable", reason=error)
                    self._settle(audio)
            case TimerFired(key=key) if key == self._timer:
                if not self.settled:
                    self.handoff.emit("whisper_unavailable",
                                      reason=f"TTS took over {WAIT_SECONDS:g} s")
                    self._settle(None)
            case _:
                return False
        return True

    def cancel(self) -> None:
        self._waiting = None
        self.control.cancel_timer(self._timer)

    def _settle(self, audio: Samples | None) -> None:
        self.settled, self.audio = True, audio
        self.control.cancel_timer(self._timer)
        waiting, self._waiting = self._waiting, None
        if waiting is not None:
            waiting(audio)


class Utterance:
    """Say ``text`` (then ``extra``, a tone say) to ``leg``; ``done()`` once it has been heard."""

    def __init__(self, control: CallControl, leg: LegId, key: str, text: str,
                 done: Callable[[], None], extra: Samples | None = None) -> None:
        self.control = control
        self.leg = leg
        self.key = key
        self.text = text
        self.extra = extra
        self._done = done
        self.playback: PlaybackId | None = None
        self.finished = False

    def start(self) -> None:
        self.control.synthesize(self.key, self.text)

    def handle(self, event: TransferEvent) -> bool:
        match event:
            case SpeechReady(key=key, audio=audio) if key == self.key and not self.finished:
                self._play(audio)
            case PlaybackEnded(playback=playback) if playback == self.playback:
                self._finish()
            case _:
                return False
        return True

    def abandon(self) -> None:
        """The caller left: report done now rather than wait for audio nobody hears."""
        self._finish()

    def _play(self, audio: Samples | None) -> None:
        speech = audio if audio is not None else np.zeros(0, dtype=np.int16)
        if self.extra is not None:
            speech = np.concatenate([speech, self.extra])
        if self.control.caller_gone or not len(speech):
            self._finish()
            return
        self.playback = self.control.play(self.leg, speech)

    def untie(self) -> None:
        """The call is forgotten: ``done`` goes (a method of whoever speaks, which holds
        this utterance back: a cycle holding the run and the call)."""
        self.finished = True
        self._done = _nothing

    def _finish(self) -> None:
        if not self.finished:
            self.finished = True
            self._done()


def _nothing() -> None:
    """What an untied utterance does when done (its call is forgotten)."""
