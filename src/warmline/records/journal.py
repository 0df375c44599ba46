"""The local journal: every record event on disk before it counts as written.

A SQLite file in WAL mode (``journal.db`` in the records folder) holds the
events that are not yet in the configured database; the writer's shipper
thread copies them there and deletes them here only after that database
committed. So an event survives a database outage of any length, a clean
shutdown and ``kill -9``: whatever is in the journal ships at the next start.

Durability, exactly: an ``append`` that returned is a committed SQLite
transaction written to the WAL with ``synchronous=NORMAL``, i.e. handed to the
kernel, so no crash of the process (``kill -9``, an exception, an OOM kill)
can lose it. ``flush`` (called every ``FLUSH_SECONDS`` by the writer while
events arrive) fsyncs the WAL, so a power cut or kernel crash loses at most
the last ``FLUSH_SECONDS`` of events. ``synchronous=FULL`` would fsync inside
every append: about five times the cost on this class of disk and milliseconds
on network disks, paid on the event loop that carries the calls' audio.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger("warmline.records")
FLUSH_SECONDS = 0.05
_COLUMNS = "uid, at, call_id, handoff_id, kind, data"
# A plain rowid table, the cheapest append SQLite has: each commit writes one page.
# `seq` is the rowid: once the journal empties, numbering may start again, which is
# safe because a shipper removes only a range it read, whose rows stay until it
# removes them, so no new row can take a seq inside it. The first layout had
# AUTOINCREMENT (a second table updated by every insert) and a UNIQUE uid (a second
# B-tree): each commit wrote three pages, and an append cost about twice as much.
# Nothing needs either: the databases skip uids they hold, and a spill file
# imported twice is filtered by uid here (`import_spill`).
_TABLE = """
CREATE TABLE IF NOT EXISTS {name} (
    seq INTEGER PRIMARY KEY,
    uid TEXT NOT NULL,
    at REAL NOT NULL,
    call_id TEXT NOT NULL,
    handoff_id TEXT,
    kind TEXT NOT NULL,
    data TEXT NOT NULL
)"""
# Legacy spill files get stable ids, so replaying one twice (a crash between the
# journal commit and the unlink) adds nothing.
_SPILL_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "warmline:pending-events.jsonl")


@dataclass(frozen=True, slots=True)
class Entry:
    """One event as journaled and shipped: ``uid`` makes the database insert idempotent."""

    uid: str
    at: float
    call_id: str
    handoff_id: str | None
    kind: str
    data: str  # JSON
    seq: int = 0  # the journal's order; 0 while the event is held in memory only

    def values(self) -> tuple[str, float, str, str | None, str, str]:
        return (self.uid, self.at, self.call_id, self.handoff_id, self.kind, self.data)

    def row(self) -> dict[str, Any]:
        return {"uid": self.uid, "at": self.at, "call_id": self.call_id,
                "handoff_id": self.handoff_id, "kind": self.kind, "data": self.data}


class Journal:
    """The journal file. ``append`` and ``remove`` share one connection and must be
    serialised by the caller (a lock is cheaper than SQLite's busy-waiting between two
    writing connections); ``oldest`` and ``flush`` may run beside them, each from one
    thread."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # flush() checkpoints from its own thread; this is only a safety net, so that an
        # append rarely pays for copying the WAL into the database file.
        self._db.execute("PRAGMA wal_autocheckpoint=10000")
        self._create_or_convert_table()
        self.count = self._db.execute("SELECT count(*) FROM journal").fetchone()[0]
        # WAL readers and checkpoints do not block appends: the shipper reads and the
        # fsync thread checkpoints on connections of their own, outside the writer's lock.
        self._reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._checkpointer = sqlite3.connect(path, isolation_level=None,
                                             check_same_thread=False)
        self._sync_directory()

    def append(self, entries: list[Entry]) -> None:
        """Commit ``entries`` to the WAL in one transaction (raises sqlite3.Error)."""
        insert = f"INSERT INTO journal ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
        if len(entries) == 1:  # the common case: one statement, its own transaction
            self.count += self._db.execute(insert, entries[0].values()).rowcount
            return
        with self._transaction():
            added = self._db.executemany(insert, [e.values() for e in entries]).rowcount
        self.count += added

    def oldest(self, limit: int) -> list[Entry]:
        """The first ``limit`` events (one thread at a time; no lock needed against appends)."""
        query = f"SELECT {_COLUMNS}, seq FROM journal ORDER BY seq LIMIT ?"
        rows = self._reader.execute(query, (limit,)).fetchall()
        return [Entry(*row) for row in rows]

    def remove(self, first_seq: int, last_seq: int) -> None:
        """Forget shipped events (only after the database committed them)."""
        removed = self._db.execute("DELETE FROM journal WHERE seq BETWEEN ? AND ?",
                                   (first_seq, last_seq)).rowcount
        self.count -= removed

    def flush(self) -> None:
        """fsync the WAL (the power-loss guarantee), then move it into the main file so
        it stays small; a checkpoint from this second connection does not block appends."""
        wal = f"{self.path}-wal"
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(wal, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def import_spill(self, spill: Path) -> int:
        """Move an old install's ``pending-events.jsonl`` (and a replay it left half done)
        into the journal, then delete the files; returns how many events came in."""
        moved = 0
        for path in (spill.with_suffix(".replaying"), spill):
            if not path.exists():
                continue
            entries = self._not_journaled(_read_spill(path))
            if entries:
                self.append(entries)
            self.flush()  # durable here before the only other copy goes
            path.unlink()
            moved += len(entries)
        return moved

    def _not_journaled(self, entries: list[Entry]) -> list[Entry]:
        """``entries`` less those already here (a replay the last start did not unlink)."""
        if not entries:
            return entries
        held = {uid for (uid,) in self._db.execute("SELECT uid FROM journal")}
        return [entry for entry in entries if entry.uid not in held]

    def _create_or_convert_table(self) -> None:
        """Create the table, or move a first-layout journal's events (seq kept) into the
        cheaper one in one transaction: a crash leaves either layout whole."""
        found = self._db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'journal'").fetchone()
        if found is None:
            self._db.execute(_TABLE.format(name="journal"))
            return
        if "AUTOINCREMENT" not in found[0].upper() and "UNIQUE" not in found[0].upper():
            return
        with self._transaction():
            self._db.execute("DROP TABLE IF EXISTS journal_converted")
            self._db.execute(_TABLE.format(name="journal_converted"))
            self._db.execute(f"INSERT INTO journal_converted (seq, {_COLUMNS}) "
                             f"SELECT seq, {_COLUMNS} FROM journal")
            self._db.execute("DROP TABLE journal")
            self._db.execute("ALTER TABLE journal_converted RENAME TO journal")
        log.info("records: the journal in %s moved to its cheaper layout", self.path)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.flush()
        self._reader.close()
        self._checkpointer.close()
        self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # SQLite rolls back by itself on a full disk
                self._db.execute("ROLLBACK")
            raise

    def _sync_directory(self) -> None:
        """The journal's and the WAL's directory entries must survive a power cut too."""
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _read_spill(path: Path) -> list[Entry]:
    """The events of a spill file; a line torn by a crash while it was written is
    reported and skipped (it never was a whole event), rather than stopping the start."""
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        try:
            row = json.loads(line)
            entries.append(Entry(uuid.uuid5(_SPILL_NAMESPACE, f"{path.name}:{number}:{line}").hex,
                                 row["at"], row["call_id"], row["handoff_id"], row["kind"],
                                 row["data"]))
        except (ValueError, KeyError, TypeError):
            log.error("records: %s line %d is not an event, skipped: %.80r",
                      path, number + 1, line)
    return entries
