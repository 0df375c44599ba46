"""Codecs behind one small interface: 20 ms of 8 kHz linear audio in, a payload out.

G.711 is stateless (tables in g711.py); G.722 keeps ADPCM state, so a codec
object belongs to one direction of one leg. G.722 runs at an 8 kHz interface,
as the `G722` package's G722(8000, 64000) does: no QMF, no resampling; each
8 kHz sample is coded in the lower sub-band (the higher one from silence) and
decoding gives the lower sub-band back, which is what a narrowband bridge
needs; wideband pass-through between two G.722 legs never decodes at all.
The relay's compiled fast path has its own G.722 (media/g722_adpcm.h), byte
for byte the package's and about as fast; when it is built, this module uses
it too, so both paths run one G.722, and the package otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np
from G722 import G722

from warmline.media import g711

Samples = g711.Samples


class CodecError(ValueError):
    """A payload that is not audio of its codec (an Opus packet libopus refuses): the
    relay counts it malformed and drops it, as it does any other bad packet."""


class Codec(Protocol):
    def encode(self, samples: Samples) -> bytes: ...

    def decode(self, payload: bytes) -> Samples: ...


class _Ulaw:
    def encode(self, samples: Samples) -> bytes:
        return g711.ulaw_encode(samples)

    def decode(self, payload: bytes) -> Samples:
        return g711.ulaw_decode(payload)


class _Alaw:
    def encode(self, samples: Samples) -> bytes:
        return g711.alaw_encode(samples)

    def decode(self, payload: bytes) -> Samples:
        return g711.alaw_decode(payload)


class _G722Package:
    """G.722 by the `G722` package: the reference, and the codec without the extension."""

    def __init__(self) -> None:
        self._encoder = G722(8000, 64000)
        self._decoder = G722(8000, 64000)

    def encode(self, samples: Samples) -> bytes:
        return bytes(self._encoder.encode(_int16(samples)))

    def decode(self, payload: bytes) -> Samples:
        return np.asarray(self._decoder.decode(payload), dtype=np.int16)


def _int16(samples: Samples) -> Samples:
    """``samples`` as 16-bit: wider or float samples clipped, never wrapped around."""
    pcm = np.asarray(samples)
    return pcm if pcm.dtype == np.int16 else np.clip(pcm, -32768, 32767).astype(np.int16)


def _compiled_g722() -> Callable[[], Any] | None:
    """The fast path's G.722 type (_fastpath.G722Codec), or None when it is not built (or
    built before it had one), or turned off with the rest of it (WARMLINE_FASTPATH=0)."""
    if os.environ.get("WARMLINE_FASTPATH", "1") == "0":
        return None
    try:
        from warmline.media import _fastpath  # type: ignore[attr-defined]
    except ImportError:
        return None
    factory: Callable[[], Any] | None = getattr(_fastpath, "G722Codec", None)
    return factory


_COMPILED_G722 = _compiled_g722()


class _G722Compiled:
    """G.722 by _fastpath.c (the relay thread's codec): the package's bytes, compiled."""

    def __init__(self, factory: Callable[[], Any]) -> None:
        self._codec = factory()  # an encoder and a decoder, one direction each

    def encode(self, samples: Samples) -> bytes:
        payload: bytes = self._codec.encode(np.ascontiguousarray(_int16(samples)))
        return payload

    def decode(self, payload: bytes) -> Samples:
        return np.frombuffer(self._codec.decode(payload), dtype=np.int16)


def _g722() -> Codec:
    return _G722Package() if _COMPILED_G722 is None else _G722Compiled(_COMPILED_G722)


class _Opus:
    """Opus on the wire (its RTP clock is 48 kHz whatever the audio), run at 8 kHz.

    libopus encodes from and decodes to 8 kHz itself (RFC 7587 §4.1: the RTP clock
    says nothing of the sampling rate), so nothing is resampled here: a tenth of the
    CPU of running it at 48 kHz with our own resampler, and a cleaner band limit.
    """

    RATE = 8000
    FRAME = 160  # 20 ms at 8 kHz
    MAX_FRAME = 960  # the longest frame a far end may send (120 ms)
    COMPLEXITY = 5  # of 10: half the encoding time of 10, no audible loss on narrowband speech

    def __init__(self) -> None:
        import opuslib  # needs the system libopus (Debian libopus0)

        self._encoder = opuslib.Encoder(self.RATE, 1, opuslib.APPLICATION_VOIP)
        self._encoder.complexity = self.COMPLEXITY
        self._decoder = opuslib.Decoder(self.RATE, 1)

    FRAMES = (20, 40, 80, 160, 320, 480)  # what Opus frames at 8 kHz: 2.5 to 60 ms

    def encode(self, samples: Samples) -> bytes:
        """One Opus packet of ``samples`` (a frame of 2.5-60 ms keeps its length, anything
        else is cut or padded to 20 ms); media/_fastpath.c does the same."""
        pcm = np.asarray(samples, dtype="<i2")
        frame = len(pcm) if len(pcm) in self.FRAMES else self.FRAME
        if len(pcm) != frame:
            pcm = np.pad(pcm, (0, max(0, frame - len(pcm))))[:frame]
        return bytes(self._encoder.encode(pcm.tobytes(), frame))

    def decode(self, payload: bytes) -> Samples:
        import opuslib

        if not payload:  # libopus would conceal a lost packet: 120 ms out of nothing
            raise CodecError("an empty Opus payload")
        try:
            pcm = self._decoder.decode(payload, self.MAX_FRAME)
        except opuslib.OpusError as error:
            raise CodecError(f"libopus refused the payload: {error}") from None
        return np.frombuffer(pcm, dtype="<i2").astype(np.int16)


def is_stateless(codec: Codec) -> bool:
    """Whether ``codec`` encodes a frame the same whatever came before (G.711): then an
    encoded frame of shared audio can be reused by every call that plays it."""
    return isinstance(codec, _Ulaw | _Alaw)


def make_codec(name: str) -> Codec:
    """A fresh codec for ``name`` (pcmu, pcma, g722, opus); raises ValueError naming it."""
    factories: dict[str, Callable[[], Codec]] = {"pcmu": _Ulaw, "pcma": _Alaw, "g722": _g722,
                                                 "opus": _Opus}
    try:
        factory = factories[name.lower()]
    except KeyError:
        raise ValueError(f"no transcoder for codec {name!r} (pcmu, pcma, g722, opus)"
                         ) from None
    return factory()
