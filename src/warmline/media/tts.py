"""Text to speech for whispers and announcements, behind a one-method interface.

The embedded default runs espeak-ng (Debian package, offline) and needs no
network or model download; a cloud or neural voice can replace it by
implementing :class:`TextToSpeech`. Text goes to espeak-ng on stdin, never on
the command line, so a context summary cannot smuggle in options.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from typing import Protocol

from warmline.media.player import AudioFileError, Samples, load_wav


class TtsError(RuntimeError):
    """Speech could not be synthesized; the message says why."""


class TextToSpeech(Protocol):
    def synthesize(self, text: str, rate: int = 8000) -> Samples: ...


class EspeakTts:
    def __init__(self, voice: str = "en-us", words_per_minute: int = 165,
                 binary: str = "espeak-ng", timeout: float = 10.0) -> None:
        self.voice = voice
        self.words_per_minute = words_per_minute
        self.binary = binary
        self.timeout = timeout

    def synthesize(self, text: str, rate: int = 8000) -> Samples:
        if not text.strip():
            raise TtsError("tts: nothing to say")
        binary = shutil.which(self.binary)
        if binary is None:
            raise TtsError(f"tts: {self.binary} is not installed (Debian package espeak-ng)")
        try:
            result = subprocess.run(
                [binary, "-v", self.voice, "-s", str(self.words_per_minute), "--stdout",
                 "--stdin"], input=text.encode("utf-8"), capture_output=True,
                timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise TtsError(f"tts: {self.binary} took longer than {self.timeout} s") from None
        if result.returncode != 0 or not result.stdout:
            detail = result.stderr.decode("utf-8", "replace").strip()[:200]
            raise TtsError(f"tts: {self.binary} failed ({result.returncode}): {detail}")
        try:
            return load_wav(io.BytesIO(result.stdout), rate, name=f"{self.binary} output")
        except AudioFileError as error:
            raise TtsError(f"tts: {error}") from None
