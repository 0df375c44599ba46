"""Synthetic audio for tests: a voiced, speech-like signal that webrtcvad hears as speech."""

from __future__ import annotations

import numpy as np


def voiced(seconds: float, rate: int = 8000) -> np.ndarray:
    """A 120 Hz glottal-like harmonic series, amplitude-modulated at a syllable rate."""
    t = np.arange(int(seconds * rate)) / rate
    wave = sum(np.sin(2 * np.pi * 120 * k * t) / k for k in range(1, 20))
    wave = wave * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return (wave / np.abs(wave).max() * 12000).astype(np.int16)
