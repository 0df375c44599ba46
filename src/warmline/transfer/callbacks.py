"""Callbacks promised to callers nobody could take, kept so that none is forgotten.

Each promise is kept in memory (``GET /callbacks``) and appended to a JSON
Lines file at once, so a crash loses nothing already promised. The dialler's
progress on each (attempts, state, outcome) is appended to the same file
after every change, so a restart knows which promises are still open, how
many dials each has had, and which were kept: :meth:`CallbackBook.load`
replays the file, the last word on each promise winning. A line that cannot
be read (a crash mid-write) is skipped and logged, never fatal.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from warmline.transfer.callback_schedule import CallbackProgress, CallbackState

log = logging.getLogger("warmline.transfer")


@dataclass(frozen=True)
class ScheduledCallback:
    handoff_id: str
    call_id: str
    number: str
    at: float  # Unix time
    reason: str
    intent: str | None = None  # what the caller wanted: routes the callback, said to them


class CallbackBook:
    """The promises, newest last; ``path`` is their JSON Lines copy, with their progress."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.promised: list[ScheduledCallback] = []
        self.progress: dict[str, CallbackProgress] = {}  # by handoff id, once dialling began
        self.on_add: Callable[[ScheduledCallback], None] | None = None  # the dialler, if on
        # told each promise's row (as GET /callbacks shows it) when it is made or moves on:
        # the cluster's shared list, if any
        self.on_change: Callable[[dict[str, Any]], None] | None = None

    def add(self, callback: ScheduledCallback) -> None:
        self.promised.append(callback)
        self._append(asdict(callback))
        self._changed(callback)
        if self.on_add is not None:
            self.on_add(callback)

    def update(self, progress: CallbackProgress) -> None:
        """Keep ``progress`` durably (appended; the last line about a promise wins)."""
        self.progress[progress.key] = progress
        self._append({"progress": {**asdict(progress), "state": progress.state.value}})
        callback = next((c for c in self.promised if c.handoff_id == progress.key), None)
        if callback is not None:
            self._changed(callback)

    def inherit(self, row: dict[str, Any], now: float) -> ScheduledCallback:
        """A promise a dead node made (its row as GET /callbacks shows it): ours to keep
        now, where it stood there; a dial it had in flight counts as an attempt (the
        dialler's ``resumed``). TypeError/ValueError/KeyError when the row is not one."""
        known = {f.name for f in fields(ScheduledCallback)}
        callback = ScheduledCallback(**{k: v for k, v in row.items() if k in known})
        attempts = int(row.get("attempts") or 0)
        progress = CallbackProgress(callback.handoff_id,
                                    max(callback.at, now) if attempts == 0 else now,
                                    CallbackState(row.get("state", "pending")), attempts,
                                    row.get("outcome"))
        self.promised.append(callback)
        self._append(asdict(callback))
        self.update(progress)
        if self.on_add is not None:
            self.on_add(callback)
        return callback

    def hand_over(self, heirs: dict[str, str]) -> None:
        """Promises another node took over while we were down (handoff id -> that node):
        not ours to dial any more, here or after the next restart."""
        for handoff_id, heir in heirs.items():
            self._append({"handed_over": handoff_id, "to": heir})
            self._forget(handoff_id)

    def open_ids(self) -> list[str]:
        """The promises not kept or failed yet."""
        return [c.handoff_id for c in self.promised
                if (p := self.progress.get(c.handoff_id)) is None or not p.final]

    def _forget(self, handoff_id: str) -> None:
        self.promised = [c for c in self.promised if c.handoff_id != handoff_id]
        self.progress.pop(handoff_id, None)

    def load(self) -> None:
        """What an earlier run promised and how far it got, from ``path`` (if any)."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return
        for number, line in enumerate(lines, start=1):
            try:
                self._replay(json.loads(line))
            except (ValueError, TypeError, KeyError) as error:
                log.warning("%s:%d: skipped, not a callback line (%s)", self.path, number,
                            error)

    def as_dicts(self) -> list[dict[str, Any]]:
        """The promises with their progress, for ``GET /callbacks``."""
        return [self.row(callback) for callback in self.promised]

    def row(self, callback: ScheduledCallback) -> dict[str, Any]:
        progress = self.progress.get(callback.handoff_id)
        return {**asdict(callback), "state": progress.state.value if progress else "pending",
                "attempts": progress.attempts if progress else 0,
                "outcome": progress.outcome if progress else None}

    def _changed(self, callback: ScheduledCallback) -> None:
        if self.on_change is not None:
            self.on_change(self.row(callback))

    def _replay(self, row: dict[str, Any]) -> None:
        if "handed_over" in row:
            self._forget(str(row["handed_over"]))
            return
        if "progress" in row:
            data = dict(row["progress"])
            data["state"] = CallbackState(data["state"])
            progress = CallbackProgress(**data)
            self.progress[progress.key] = progress
            return
        known = {f.name for f in fields(ScheduledCallback)}
        self.promised.append(ScheduledCallback(**{k: v for k, v in row.items() if k in known}))

    def _append(self, row: dict[str, Any]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as log_file:
            log_file.write(json.dumps(row) + "\n")
