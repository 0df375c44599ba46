"""The offline text-to-speech default (espeak-ng) as a whisper source."""

from __future__ import annotations

import numpy as np
import pytest

from warmline.media.tts import EspeakTts, TtsError
from warmline.media.vad import FirstWordDetector


def test_espeak_speaks_a_whisper_at_8k_that_vad_hears_as_speech() -> None:
    samples = EspeakTts().synthesize("Maria, identity verified, billing dispute, frustrated.")
    assert samples.dtype == np.int16 and 1.5 * 8000 < len(samples) < 8 * 8000
    detector = FirstWordDetector(8000)
    onsets = [detector.feed(samples[i:i + 160].tobytes(), i / 8000)
              for i in range(0, len(samples) - 160, 160)]
    assert any(at is not None for at in onsets)


def test_text_is_not_read_as_options() -> None:
    samples = EspeakTts().synthesize("--version -w /tmp/owned.wav")
    assert len(samples) > 8000  # spoken, not obeyed


def test_missing_engine_and_empty_text_are_clear_errors() -> None:
    with pytest.raises(TtsError, match="not installed"):
        EspeakTts(binary="no-such-tts-engine").synthesize("hello")
    with pytest.raises(TtsError, match="nothing to say"):
        EspeakTts().synthesize("   ")
