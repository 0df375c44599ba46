"""Call recording with consent: when a call is recorded, and what the records say about it.

A recording starts only after the caller was told (the consent announcement,
spoken by TTS on the caller's leg and played out before the first frame is
kept), from the call's start (mode "call"), from a handoff on (mode "handoff",
the engine asks for it before the transfer runs) or when the API says so. It
captures the caller's leg both ways (media/recorder.py: caller left, what the
caller hears right) into ``<folder>/<call id>.wav``, and can be paused while
the caller reads out a card number (PCI DSS): silence is written for that span
and the pause and resume are in the records. Every step is journaled as a
``call.recording_*`` event; the file is named there, its path never.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from warmline.calls.call import Call
from warmline.media.player import Player, Samples
from warmline.media.recorder import RATE, StereoRecorder
from warmline.media.tts import TextToSpeech, TtsError

log = logging.getLogger("warmline")
DEFAULT_CONSENT = ("This call is recorded for quality and training purposes. "
                   "If you do not agree, please say so.")
Journal = Callable[[str, str, dict[str, Any]], None]  # call id, kind, data


class RecordingMode(StrEnum):
    OFF = "off"  # only when the API asks (secure by default)
    CALL = "call"  # every call, from its start
    HANDOFF = "handoff"  # from a handoff on: the human's part of the call


class RecordingAction(StrEnum):
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"


class RecordingPhase(StrEnum):
    ANNOUNCING = "announcing"  # the consent is being played; nothing kept yet
    RECORDING = "recording"
    PAUSED = "paused"


class RecordingConflict(Exception):
    """The action does not fit the call's recording now (HTTP 409); the message says why."""


@dataclass(frozen=True)
class RecordingSettings:
    """[recording]: when calls are recorded, what the caller is told, where and how long."""

    mode: RecordingMode = RecordingMode.OFF
    consent: str = DEFAULT_CONSENT  # "" plays nothing (the operator announces it otherwise)
    directory: Path | None = None  # None: <records>/recordings
    retention_days: float = 0.0  # files older are deleted; 0 keeps them

    def folder(self, records_dir: Path) -> Path:
        return self.directory if self.directory is not None else records_dir / "recordings"


@dataclass(eq=False)
class _Recording:
    call: Call
    phase: RecordingPhase = RecordingPhase.ANNOUNCING
    recorder: StereoRecorder | None = None
    cancelled: bool = False  # stopped or hung up during the announcement


class CallRecordings:
    """The recordings of the live calls, one at a time per call."""

    def __init__(self, settings: RecordingSettings, records_dir: Path, tts: TextToSpeech,
                 journal: Journal) -> None:
        self.settings = settings
        self.folder = settings.folder(records_dir)
        self.tts = tts
        self.journal = journal
        self._live: dict[str, _Recording] = {}
        self._closing: dict[str, asyncio.Future[None]] = {}  # stopped, file not yet complete
        self._consent: Samples | None = None  # synthesized once, at the first recording

    def phase(self, call_id: str) -> RecordingPhase | None:
        entry = self._live.get(call_id)
        return None if entry is None else entry.phase

    def path(self, call_id: str) -> Path:
        """Where ``call_id``'s recording is (or would be) kept."""
        return self.folder / f"{call_id}.wav"

    def start(self, call: Call, announce: bool = True) -> Coroutine[Any, Any, bool]:
        """Claim the call's recording now (RecordingConflict if it cannot be); the
        coroutine returned announces the consent, then records. It returns whether the
        recording started (not when the caller hung up, or the TTS failed, meanwhile)."""
        if call.ended:
            raise RecordingConflict(f"call {call.id} has ended")
        if call.id in self._live:
            raise RecordingConflict(f"call {call.id} is being recorded already "
                                    f"({self._live[call.id].phase.value})")
        if call.id in self._closing or self.path(call.id).exists():
            raise RecordingConflict(f"call {call.id} was recorded already and the recording "
                                    "stopped; one recording a call (pause and resume instead)")
        entry = self._live[call.id] = _Recording(call)
        return self._announce_then_record(call, entry, announce)

    def pause(self, call: Call) -> None:
        recorder = self._recorder(call, RecordingPhase.RECORDING, "pause")
        recorder.pause()
        self._live[call.id].phase = RecordingPhase.PAUSED
        self.journal(call.id, "call.recording_paused", {"at": round(recorder.seconds, 2)})

    def resume(self, call: Call) -> None:
        recorder = self._recorder(call, RecordingPhase.PAUSED, "resume")
        recorder.resume()
        self._live[call.id].phase = RecordingPhase.RECORDING
        self.journal(call.id, "call.recording_resumed", {"at": round(recorder.seconds, 2)})

    def stop(self, call: Call) -> asyncio.Future[None] | None:
        """Stop the call's recording (RecordingConflict if there is none); the future
        resolves when the file is complete. During the announcement nothing was kept."""
        entry = self._live.pop(call.id, None)
        if entry is None:
            raise RecordingConflict(f"call {call.id} is not being recorded")
        entry.cancelled = True
        recorder = entry.recorder
        if recorder is None:
            return None
        call.caller.media.capture(None)
        done = self._closing[call.id] = asyncio.wrap_future(recorder.stop())
        done.add_done_callback(lambda _: self._closing.pop(call.id, None))
        self.journal(call.id, "call.recording_stopped",
                     {"path": recorder.path.name,
                      "seconds": round(recorder.frames_written / RATE, 2),
                      "lost_seconds": round(recorder.lost_seconds, 2)})
        return done

    def call_ended(self, call: Call) -> asyncio.Future[None] | None:
        """The caller is gone: the recording (if any) ends with the call."""
        if call.id not in self._live:
            return None
        return self.stop(call)

    async def close(self) -> None:
        """Finish every file (the engine is closing)."""
        for entry in list(self._live.values()):
            self.stop(entry.call)
        if self._closing:
            await asyncio.gather(*self._closing.values(), return_exceptions=True)

    def being_written(self, call_id: str) -> bool:
        """Whether the call's file is still open: recording, or its last chunks on the way."""
        return call_id in self._live or call_id in self._closing

    # -- inside ----------------------------------------------------------------------
    def _recorder(self, call: Call, phase: RecordingPhase, action: str) -> StereoRecorder:
        entry = self._live.get(call.id)
        if entry is None or entry.recorder is None or entry.phase is not phase:
            now = "not being recorded" if entry is None else entry.phase.value
            raise RecordingConflict(f"cannot {action}: call {call.id} is {now}")
        return entry.recorder

    async def _announce_then_record(self, call: Call, entry: _Recording, announce: bool
                                    ) -> bool:
        try:
            if announce and self.settings.consent:
                await self._announce(call)
        except TtsError as error:
            log.warning("call %s not recorded: the consent announcement failed (%s)",
                        call.id, error, extra={"call_id": call.id})
            if self._live.get(call.id) is entry:
                del self._live[call.id]
            self.journal(call.id, "call.recording_failed", {"reason": "consent not played"})
            return False
        if entry.cancelled or call.ended:
            if self._live.get(call.id) is entry:
                del self._live[call.id]
            return False
        self._begin(call, entry)
        return True

    async def _announce(self, call: Call) -> None:
        if self._consent is None:
            loop = asyncio.get_running_loop()
            self._consent = await loop.run_in_executor(None, self.tts.synthesize,
                                                       self.settings.consent)
        if not call.ended:
            await call.caller.media.play(Player(self._consent)).done

    def _begin(self, call: Call, entry: _Recording) -> None:
        loop = asyncio.get_running_loop()
        recorder = StereoRecorder(self.path(call.id))

        def failed(error: BaseException) -> None:  # on the writer thread
            loop.call_soon_threadsafe(log.warning, "call %s: recording %s failed: %s",
                                      call.id, recorder.path.name, error)

        recorder.on_failure = failed
        try:
            call.caller.media.capture(recorder)
        except Exception:
            recorder.stop()  # the file is closed, not left half-written
            del self._live[call.id]
            raise
        entry.recorder, entry.phase = recorder, RecordingPhase.RECORDING
        recorder.start(loop)
        self.journal(call.id, "call.recording_started", {"path": recorder.path.name})

