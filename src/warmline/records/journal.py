"""The local journal: every record event on disk before it counts as written.

A SQLite file in WAL mode (``journal.db`` in the records folder) holds the
events that are not yet in the configured database; the writer's shipper
thread copies them there and deletes them here only after that database
committed. So an event survives a database outage of any length, a clean
shutdown and ``kill -9``: whatever is in the journal ships at the next start.

Durability, exactly: an ``append`` that returned has been written to the
intake file (``journal.intake``, intake.py) in one write(), i.e. handed to the
kernel, so no crash of the process (``kill -9``, an exception, an OOM kill)
can lose it. ``flush`` (called every ``FLUSH_SECONDS`` by the writer while
events arrive) moves the intake into the SQLite table in one transaction
(``settle``) and fsyncs the WAL (the intake itself while it cannot be moved),
so a power cut or kernel crash loses at most the last ``FLUSH_SECONDS`` of
events. Until then an event is on disk but not yet in the table the shipper
reads: it ships up to ``FLUSH_SECONDS`` later. The first version committed each
append to SQLite: six fcntl locks and two or three pwrites, ~30 us on the event
loop, where the write() costs a few. ``synchronous=FULL`` would fsync inside
every append: milliseconds on network disks.

The engine's process owns the intake; the shipper process opens the journal with
``owner=False`` and only reads and removes rows of the table.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from warmline.records import intake
from warmline.records.intake import Intake

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
    """The journal file. ``append`` and ``remove`` must be serialised by the caller;
    ``oldest`` and ``flush`` may run beside them, each from one thread. ``owner``: this
    process takes appends (through the intake), not only reads and removes."""

    def __init__(self, path: Path, *, owner: bool = True) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        # flush() checkpoints from its own thread; this is only a safety net, so that an
        # append rarely pays for copying the WAL into the database file.
        self._db.execute("PRAGMA wal_autocheckpoint=10000")
        self._create_or_convert_table()
        self._rows: int = self._db.execute("SELECT count(*) FROM journal").fetchone()[0]
        # WAL readers and checkpoints do not block appends: the shipper reads and the
        # fsync thread checkpoints on connections of their own, outside the writer's lock.
        self._reader = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._checkpointer = sqlite3.connect(path, isolation_level=None,
                                             check_same_thread=False)
        self._intake = Intake(path.with_suffix(".intake")) if owner else None
        self._settling = 0  # events rotated out of the intake, not yet in the table
        self._settle_lock = threading.Lock()  # settle and flush, one at a time
        self._rows_lock = threading.Lock()  # _rows, between the move and the shipper's remove
        self._sync_directory()
        if self._intake is not None:  # what a crash left: a file being moved, the intake
            try:
                for _ in ("settling", "intake"):
                    self.settle()
            except (sqlite3.Error, OSError, ValueError) as error:  # the fsync thread retries
                log.error("records: cannot move the journal's intake into its table at "
                          "start (the events wait on disk): %s", error)

    @property
    def count(self) -> int:
        """Events here: in the table, and (the owner's) on their way into it. Read in the
        order events travel (intake, moving, table): a move finishing meanwhile may count
        a batch twice for an instant, never not at all."""
        on_the_way = self._intake.count if self._intake is not None else 0
        on_the_way += self._settling
        return on_the_way + self._rows

    @property
    def unsettled(self) -> bool:
        """Whether events wait in the intake or a file being moved, for ``settle``."""
        if self._intake is None:
            return False
        return self._intake.count + self._settling > 0 or self._intake.settling.exists()

    def append(self, entries: list[Entry]) -> None:
        """Hand ``entries`` to the kernel in one write() (raises OSError, then nothing of
        them was kept); the owner only."""
        if self._intake is None:
            raise RuntimeError("journal: appends go through the process that owns it")
        self._intake.append([entry.values() for entry in entries])

    def settle(self) -> int:
        """Move the intake into the table in one transaction; returns how many events
        moved (raises sqlite3.Error or OSError: then they wait in their file, on disk)."""
        with self._settle_lock:
            return self._settle()

    def _settle(self) -> int:
        if self._intake is None:
            return 0
        settling = self._intake.settling
        if not settling.exists():  # else a move that failed: that file first
            # counted as moving before the intake forgets them (see `count`)
            self._settling = self._intake.count
            try:
                self._settling = self._intake.rotate()
            except OSError:
                self._settling = 0  # still in the intake, counted there
                raise
            if not settling.exists():
                return 0
        rows = intake.read(settling)
        moved = len(rows)
        insert = f"INSERT INTO journal ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)"
        with _transaction(self._checkpointer):
            self._checkpointer.executemany(insert, rows)
        with self._rows_lock:
            self._rows += moved
        self._settling = 0
        self._fsync_wal()  # the rows on disk before the file that held them goes
        settling.unlink()
        return moved

    def oldest(self, limit: int) -> list[Entry]:
        """The first ``limit`` events (one thread at a time; no lock needed against appends)."""
        query = f"SELECT {_COLUMNS}, seq FROM journal ORDER BY seq LIMIT ?"
        rows = self._reader.execute(query, (limit,)).fetchall()
        return [Entry(*row) for row in rows]

    def remove(self, first_seq: int, last_seq: int) -> None:
        """Forget shipped events (only after the database committed them)."""
        removed = self._db.execute("DELETE FROM journal WHERE seq BETWEEN ? AND ?",
                                   (first_seq, last_seq)).rowcount
        with self._rows_lock:
            self._rows -= removed

    def flush(self) -> int:
        """Move the intake into the table (returns how many events moved), fsync the WAL
        (the power-loss guarantee), then move the WAL into the main file so it stays
        small; a checkpoint from this second connection does not block the shipper's
        removes. If the intake cannot be moved (a full disk), its files are fsynced
        where they are and the error raised after."""
        with self._settle_lock:
            failure: Exception | None = None
            moved = 0
            try:
                moved = self._settle()
            except (sqlite3.Error, OSError, ValueError) as error:
                failure = error
                self._sync_intake()
            if not moved:  # a move fsyncs the WAL itself, before unlinking its file
                self._fsync_wal()
            self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            if failure is not None:
                raise failure
            return moved

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
        with _transaction(self._db):
            self._db.execute("DROP TABLE IF EXISTS journal_converted")
            self._db.execute(_TABLE.format(name="journal_converted"))
            self._db.execute(f"INSERT INTO journal_converted (seq, {_COLUMNS}) "
                             f"SELECT seq, {_COLUMNS} FROM journal")
            self._db.execute("DROP TABLE journal")
            self._db.execute("ALTER TABLE journal_converted RENAME TO journal")
        log.info("records: the journal in %s moved to its cheaper layout", self.path)

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error, OSError):
            self.flush()
        if self._intake is not None:
            self._intake.close()
        self._reader.close()
        self._checkpointer.close()
        self._db.close()

    def _fsync_wal(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(f"{self.path}-wal", os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def _sync_intake(self) -> None:
        """The intake and a file being moved, on disk where they are (and their names)."""
        if self._intake is None:
            return
        self._intake.sync()
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(self._intake.settling, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        self._sync_directory()

    def _sync_directory(self) -> None:
        """The journal's and the WAL's directory entries must survive a power cut too."""
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # SQLite rolls back by itself on a full disk
            db.execute("ROLLBACK")
        raise


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
