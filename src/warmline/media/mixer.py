"""Mix-minus for a 3-way (attended) transfer: each party hears the other two.

Frames are int16 linear audio of equal length; sums are taken in int32 and
clipped, so a loud party saturates instead of wrapping into noise.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Frame = npt.NDArray[np.int16]


def mix_minus(frames: list[Frame]) -> list[Frame]:
    """For each input, the clipped sum of all the others (silence for a lone party)."""
    if not frames:
        return []
    length = len(frames[0])
    if any(len(frame) != length for frame in frames):
        raise ValueError("mix_minus: frames must have the same length")
    stacked = np.stack(frames).astype(np.int32)
    total = stacked.sum(axis=0)
    return [np.clip(total - own, -32768, 32767).astype(np.int16) for own in stacked]
