"""The first spoken word on a leg, with its time, for "trigger to human's first word".

webrtcvad classifies 10/20/30 ms frames; a word starts at the first of
``min_frames`` consecutive speech frames, so a click or a burst of line noise
does not count as the human speaking.
"""

from __future__ import annotations

import webrtcvad

SUPPORTED_RATES = (8000, 16000, 32000, 48000)


class FirstWordDetector:
    def __init__(self, sample_rate: int = 8000, *, aggressiveness: int = 2,
                 min_frames: int = 5) -> None:
        if sample_rate not in SUPPORTED_RATES:
            raise ValueError(f"vad: sample rate {sample_rate} not in {SUPPORTED_RATES}")
        self.sample_rate = sample_rate
        self.min_frames = min_frames
        self._vad = webrtcvad.Vad(aggressiveness)
        self._run_start: float | None = None
        self._run_length = 0
        self.first_word_at: float | None = None

    def feed(self, frame: bytes, timestamp: float) -> float | None:
        """Feed one 16-bit mono frame; returns the word's start time once, when confirmed."""
        if self.first_word_at is not None:
            return None
        if self._vad.is_speech(frame, self.sample_rate):
            if self._run_length == 0:
                self._run_start = timestamp
            self._run_length += 1
            if self._run_length >= self.min_frames:
                self.first_word_at = self._run_start
                return self.first_word_at
        else:
            self._run_length = 0
        return None
