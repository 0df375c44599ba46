"""G.711 μ-law and A-law (ITU-T G.711) as lookup tables.

Decoding is a 256-entry table; encoding is a 65,536-entry table indexed by the
16-bit sample, so a 20 ms frame converts in one numpy ``take``. PCMU<->PCMA
bridging never goes through linear audio: ``bytes.translate`` with a 256-byte
table does it in C, which is what keeps a transcoding bridge cheap.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Samples = npt.NDArray[np.int16]
_BIAS = 0x84
_CLIP = 32635
_A_SEGMENT_ENDS = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF])


def _ulaw_decode_table() -> Samples:
    code = ~np.arange(256, dtype=np.int32) & 0xFF
    magnitude = (((code & 0x0F) << 3) + _BIAS) << ((code & 0x70) >> 4)
    return np.where(code & 0x80, _BIAS - magnitude, magnitude - _BIAS).astype(np.int16)


def _alaw_decode_table() -> Samples:
    code = np.arange(256, dtype=np.int32) ^ 0x55
    segment = (code & 0x70) >> 4
    magnitude = (code & 0x0F) << 4
    magnitude = np.where(segment == 0, magnitude + 8, magnitude + 0x108)
    magnitude = np.where(segment > 1, magnitude << np.maximum(segment - 1, 0), magnitude)
    return np.where(code & 0x80, magnitude, -magnitude).astype(np.int16)


def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    sample = np.arange(-32768, 32768, dtype=np.int32)
    sign = np.where(sample < 0, 0x80, 0)
    magnitude = np.minimum(np.abs(sample), _CLIP) + _BIAS
    exponent = np.floor(np.log2(magnitude >> 7 | 1)).astype(np.int32)  # highest set bit
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    return np.asarray(~(sign | (exponent << 4) | mantissa) & 0xFF, dtype=np.uint8)


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    sample = np.arange(-32768, 32768, dtype=np.int32) >> 3  # 13-bit
    mask = np.where(sample >= 0, 0xD5, 0x55)
    value = np.where(sample >= 0, sample, -sample - 1)
    segment = np.searchsorted(_A_SEGMENT_ENDS, value)  # first end >= value
    mantissa = np.where(segment < 2, value >> 1, value >> np.maximum(segment, 1)) & 0x0F
    code = np.where(segment >= 8, 0x7F, (segment << 4) | mantissa)
    return ((code ^ mask) & 0xFF).astype(np.uint8)


ULAW_TO_LINEAR = _ulaw_decode_table()
ALAW_TO_LINEAR = _alaw_decode_table()
LINEAR_TO_ULAW = _ulaw_encode_table()  # indexed by sample + 32768; media/_fastpath.c
LINEAR_TO_ALAW = _alaw_encode_table()  # copies all six tables at import
ULAW_TO_ALAW = bytes(LINEAR_TO_ALAW[ULAW_TO_LINEAR.astype(np.int32) + 32768])
ALAW_TO_ULAW = bytes(LINEAR_TO_ULAW[ALAW_TO_LINEAR.astype(np.int32) + 32768])


def ulaw_decode(payload: bytes) -> Samples:
    return ULAW_TO_LINEAR[np.frombuffer(payload, dtype=np.uint8)]


def alaw_decode(payload: bytes) -> Samples:
    return ALAW_TO_LINEAR[np.frombuffer(payload, dtype=np.uint8)]


def ulaw_encode(samples: Samples) -> bytes:
    return LINEAR_TO_ULAW[samples.astype(np.int32) + 32768].tobytes()


def alaw_encode(samples: Samples) -> bytes:
    return LINEAR_TO_ALAW[samples.astype(np.int32) + 32768].tobytes()


def ulaw_to_alaw(payload: bytes) -> bytes:
    return payload.translate(ULAW_TO_ALAW)


def alaw_to_ulaw(payload: bytes) -> bytes:
    return payload.translate(ALAW_TO_ULAW)
