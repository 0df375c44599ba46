"""Callbacks promised to callers nobody could take, kept so that none is forgotten.

Each promise is kept in memory (``GET /callbacks``) and appended to a JSON
Lines file at once, so a crash loses nothing already promised.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class ScheduledCallback:
    handoff_id: str
    call_id: str
    number: str
    at: float  # Unix time
    reason: str


class CallbackBook:
    """The promises, newest last; ``path`` is their JSON Lines copy."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.promised: list[ScheduledCallback] = []

    def add(self, callback: ScheduledCallback) -> None:
        self.promised.append(callback)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as log:
            log.write(json.dumps(asdict(callback)) + "\n")
