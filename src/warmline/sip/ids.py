"""Unpredictable identifiers (tags, branches, Call-IDs) without a syscall per id.

Tags and Call-IDs guard dialogs against spoofed BYEs, so they come from the
OS's CSPRNG; reading it in 4 KiB blocks keeps that off the per-message path.
"""

from __future__ import annotations

import os

_BLOCK = 4096


class IdSource:
    """Callable returning 16 hex characters (64 random bits) per call."""

    def __init__(self) -> None:
        self._pool = b""
        self._offset = 0

    def __call__(self) -> str:
        offset = self._offset
        if offset + 8 > len(self._pool):
            self._pool = os.urandom(_BLOCK)
            offset = 0
        self._offset = offset + 8
        return self._pool[offset : offset + 8].hex()
