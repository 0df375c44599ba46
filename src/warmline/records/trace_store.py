"""Where ended calls' SIP traces live: one SQLite file, ``traces.sqlite``, beside the records.

A file per call was what the first version wrote, and it does not scale: at
300 calls a second the creation of each file (inode, directory entry, the
file system's journal, then the rename that makes it appear whole) was most of
the trace writer's time and, competing for the same two cores, the ceiling of
the whole node; an hour of traffic left a million files in one directory, a
handoff id was found by opening every one of them, and nothing ever deleted
them. Here a trace is one row (its messages as one JSON array), written in
batches by one connection (WAL: readers never wait for it), found by call id
or by any handoff id through an index, and deleted after ``[trace] keep_days``.

A call adopted back by the node that had let it go writes a second row under
the same call id; :meth:`TraceStore.find` returns the union, in time order.
Traces are diagnostics, not records: ``synchronous=NORMAL`` keeps them through
a crash of the process, not necessarily through one of the machine.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from warmline.records.trace import TracedMessage, cleaned

TRACE_FILE = "traces.sqlite"
_SAFE_ID = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")  # the ids warmline gives calls and handoffs
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS trace (row INTEGER PRIMARY KEY, call_id TEXT NOT NULL, "
    "written REAL NOT NULL, messages TEXT NOT NULL)",
    "CREATE INDEX IF NOT EXISTS trace_by_call ON trace (call_id)",
    "CREATE INDEX IF NOT EXISTS trace_by_age ON trace (written)",
    # a handoff id -> the trace row of its call
    "CREATE TABLE IF NOT EXISTS trace_key (key TEXT NOT NULL, row INTEGER NOT NULL)",
    "CREATE INDEX IF NOT EXISTS trace_key_by_key ON trace_key (key)",
    "CREATE INDEX IF NOT EXISTS trace_key_by_row ON trace_key (row)",
)


@dataclass(frozen=True)
class TraceRow:
    """One call's trace as written: its id, its handoffs, its messages (already cleaned)."""

    call_id: str
    handoff_ids: Sequence[str]
    messages: Sequence[TracedMessage]
    written: float  # Unix time

    def messages_json(self) -> str:
        return "[" + ",".join(message.as_json() for message in self.messages) + "]"


class TraceStore:
    """One connection to ``traces.sqlite``; use it from one thread at a time."""

    def __init__(self, folder: Path, *, create: bool = True) -> None:
        self.path = folder / TRACE_FILE
        if create:
            folder.mkdir(parents=True, exist_ok=True)
        elif not self.path.exists():
            raise LookupError(f"no SIP traces in {folder}")
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                   timeout=10.0)
        if create:
            self._db.execute("PRAGMA journal_mode=WAL")
            for statement in _SCHEMA:
                self._db.execute(statement)
        self._db.execute("PRAGMA synchronous=NORMAL")

    def add(self, rows: Iterable[TraceRow]) -> None:
        """Every row in one transaction (raises sqlite3.Error: nothing of the batch kept)."""
        db = self._db
        db.execute("BEGIN")
        try:
            for row in rows:
                number = db.execute(
                    "INSERT INTO trace (call_id, written, messages) VALUES (?, ?, ?)",
                    (row.call_id, row.written, row.messages_json())).lastrowid
                db.executemany("INSERT INTO trace_key (key, row) VALUES (?, ?)",
                               [(key, number) for key in row.handoff_ids])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def find(self, wanted: str) -> tuple[str, list[TracedMessage]] | None:
        """The trace of a call id, or of the call a handoff id belongs to (every row of
        that call, its messages in time order); None when there is none."""
        db = self._db
        found = db.execute("SELECT t.call_id FROM trace_key k JOIN trace t ON t.row = k.row "
                           "WHERE k.key = ? LIMIT 1", (wanted,)).fetchone()
        call_id = found[0] if found is not None else wanted
        messages = [TracedMessage(item["at"], item["dir"], item["transport"], item["host"],
                                  item["port"], item["text"])
                    for (text,) in db.execute("SELECT messages FROM trace WHERE call_id = ? "
                                              "ORDER BY row", (call_id,))
                    for item in json.loads(text)]
        if not messages and found is None and not self._has(call_id):
            return None
        return call_id, sorted(messages, key=lambda message: message.at)

    def _has(self, call_id: str) -> bool:
        return self._db.execute("SELECT 1 FROM trace WHERE call_id = ? LIMIT 1",
                                (call_id,)).fetchone() is not None

    def forget_before(self, cutoff: float) -> int:
        """Delete the traces written before ``cutoff`` (Unix time); how many went."""
        db = self._db
        db.execute("BEGIN")
        try:
            db.execute("DELETE FROM trace_key WHERE row IN "
                       "(SELECT row FROM trace WHERE written < ?)", (cutoff,))
            deleted = db.execute("DELETE FROM trace WHERE written < ?", (cutoff,)).rowcount
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return int(deleted)

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM trace").fetchone()[0])

    def close(self) -> None:
        self._db.close()


def trace_row(call_id: str, handoff_ids: Iterable[str], messages: Iterable[TracedMessage],
              clean: Callable[[str], str] = lambda text: text) -> TraceRow:
    """A call's trace ready to store: each message through ``clean`` (the engine's
    redaction of personal data) with the keys the caller pressed taken out first."""
    if not _SAFE_ID.match(call_id):
        raise ValueError(f"{call_id!r} is not a call id")
    return TraceRow(call_id, tuple(handoff_ids), cleaned(messages, clean), time.time())


def write_trace(folder: Path, call_id: str, handoff_ids: list[str],
                messages: list[TracedMessage],
                clean: Callable[[str], str] = lambda text: text) -> None:
    """One call's trace into ``folder``'s store (the engine batches through TraceWriter)."""
    row = trace_row(call_id, handoff_ids, messages, clean)
    store = TraceStore(folder)
    try:
        store.add([row])
    finally:
        store.close()


def find_trace(folder: Path, wanted: str) -> tuple[str, list[TracedMessage]]:
    """The trace of a call id, or of the call a handoff id belongs to; LookupError naming
    what was looked for when there is none. A trace an earlier version wrote as
    ``traces/<call id>.jsonl`` is still found by its call id."""
    found = None
    if (folder / TRACE_FILE).exists():
        store = TraceStore(folder, create=False)
        try:
            found = store.find(wanted)
        finally:
            store.close()
    if found is None and _SAFE_ID.match(wanted):
        found = _legacy_file(folder / "traces" / f"{wanted}.jsonl")
    if found is None:
        raise LookupError(f"no SIP trace for {wanted} in {folder}")
    return found


def _legacy_file(path: Path) -> tuple[str, list[TracedMessage]] | None:
    """A file of the first version: a header line (the call, its handoffs), a line a message."""
    try:
        with path.open(encoding="utf-8") as lines:
            header = json.loads(lines.readline() or "{}")
            if not isinstance(header, dict) or "call_id" not in header:
                return None
            return str(header["call_id"]), [TracedMessage.from_json(line) for line in lines
                                            if line.strip()]
    except (OSError, ValueError):
        return None
