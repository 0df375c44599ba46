"""The records: an append-only event log per call and handoff, on SQLite or PostgreSQL.

One schema and one code path for both (SQLAlchemy Core; psycopg 3 for
PostgreSQL): ``sqlite:///warmline-records/records.db`` by default, a
``postgresql+psycopg://...`` URL for several engines sharing state. The
schema is migrated with Alembic at first use (migrate.py, the scripts in
``migrations/``); ``metadata`` below is what the migrations build (a test
compares them).

Several nodes may write one PostgreSQL: each row's ``id`` comes from the
table's own sequence (never chosen by a node) and its ``uid`` is a random
128-bit id, as are call and handoff ids, so two nodes never collide.

Nothing is lost: ``RecordWriter.add`` commits each event to a local journal
(``journal.py``) before it returns, and a process of its own (``shipper.py``)
ships the journal to the database, deleting events there only after the
database committed them. An
outage of any length, a clean shutdown or ``kill -9`` leaves the events in the
journal, shipped when the database answers, at the latest at the next start.
Shipping is at-least-once; storing is exactly-once because every event
carries a unique ``uid`` that the insert skips when already stored.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import math
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    Executable,
    create_engine,
    insert,
    select,
)
from sqlalchemy.dialects import postgresql, sqlite

from warmline.records import migrate
from warmline.records.journal import FLUSH_SECONDS, Entry, Journal
from warmline.records.schema import events_table, metadata, schema_table, uid_index
from warmline.records.shipper_process import ShipperProcess

__all__ = ["Event", "RecordWriter", "connect", "default_url", "events_table", "insert_events",
           "metadata", "read_call_events", "read_events", "schema_table", "uid_index"]

log = logging.getLogger("warmline.records")
IDLE_CHECK_SECONDS = 1.0  # the shipper thread looks at the journal at least this often


class _UniqueIds:
    """Event ids unique across processes and restarts: 64 random bits drawn once a
    process, then a counter (32 hex digits, as the uid column holds). A uuid4 a call
    cost an urandom call and an int conversion on the event loop for nothing more."""

    def __init__(self) -> None:
        self._renew()
        os.register_at_fork(after_in_child=self._renew)  # a forked worker draws its own

    def _renew(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter: Iterator[int] = itertools.count()

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


_unique_ids = _UniqueIds()
# json.dumps(data, default=str) built an encoder a call; this one is built once
_encode_data = json.JSONEncoder(default=str).encode


@dataclass(frozen=True)
class Event:
    at: float
    call_id: str
    kind: str
    data: dict[str, Any]
    handoff_id: str | None = None

    def entry(self) -> Entry:
        """The event as journaled, under a new unique id."""
        return Entry(_unique_ids.next(), self.at, self.call_id, self.handoff_id, self.kind,
                     _encode_data(self.data))


def default_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'records.db'}"


def connect(url: str) -> Engine:
    """An engine for ``url`` with the schema at the newest revision (migrate.py: created
    if new, migrated if old, adopted if made before Alembic)."""
    # a database that drops packets must not hold the shipper for the OS's TCP timeout
    options = {"connect_args": {"connect_timeout": 5}} if url.startswith("postgresql") else {}
    engine = create_engine(url, pool_pre_ping=True, **options)
    migrate.upgrade(engine)
    return engine


def insert_events(engine: Engine, entries: Sequence[Entry]) -> None:
    """Store ``entries`` in one transaction, skipping those whose uid is already stored:
    a crash between this commit and the journal's delete ships the batch again."""
    rows = list({entry.uid: entry.row() for entry in entries}.values())  # one row a uid
    with engine.begin() as connection:
        statement = _insert_skipping_stored(connection.dialect.name)
        if statement is None:
            rows = _not_stored(connection, rows)
            statement = insert(events_table)
        if rows:
            connection.execute(statement, rows)


def _insert_skipping_stored(dialect: str) -> Executable | None:
    if dialect == "postgresql":
        return postgresql.insert(events_table).on_conflict_do_nothing(index_elements=["uid"])
    if dialect == "sqlite":
        return sqlite.insert(events_table).on_conflict_do_nothing(index_elements=["uid"])
    return None


def _not_stored(connection: Connection, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """For other databases: the rows whose uid is not there yet (same transaction)."""
    stored = set(connection.execute(select(events_table.c.uid).where(
        events_table.c.uid.in_([row["uid"] for row in rows]))).scalars())
    return [row for row in rows if row["uid"] not in stored]


class RecordWriter:
    """Journals every event on local disk, then ships it to the database from a process of
    its own (shipper.py: off this process's GIL); from a thread here only when that process
    cannot run, and for events held in memory while the journal cannot be written.

    Durable means: once ``add`` returned, no crash of this process (``kill -9``
    included), no database outage and no shutdown loses the event; a power cut
    or kernel crash loses at most the last ``FLUSH_SECONDS`` (50 ms) of events,
    which a thread fsyncs (see journal.py for why not on every add). ``add``
    costs tens of microseconds on the caller's thread and never raises: if the
    journal cannot be written (a full disk), the event is held in memory and
    shipped from there, the failure is logged as an error and counted in
    ``journal_failures``; only past ``MEMORY_LIMIT`` held events with the
    journal still failing is an event dropped, and counted in ``lost``.
    """

    BATCH = 500
    MEMORY_LIMIT = 100_000

    def __init__(self, url: str, folder: Path, retry_seconds: float = 0.5,
                 separate_process: bool = True) -> None:
        """Open (or create) ``folder/journal.db``, move an old install's
        ``pending-events.jsonl`` into it, and start shipping (``separate_process``
        False: from a thread of this process, as when the shipper process dies)."""
        self.url = url
        self.folder = folder
        self.retry_seconds = retry_seconds
        self.written = 0  # events this writer saw committed to the database
        self.failures = 0  # failed attempts to reach the database
        self.journal_failures = 0  # events the journal could not take
        self.lost = 0  # events dropped (journal failing and memory full, or added after close)
        self._lock = threading.Lock()  # the journal's connection and the held events
        self._memory: list[Entry] = []  # events the journal could not take
        self._engine: Engine | None = None
        self._wake, self._closing, self._stopped = (threading.Event(), threading.Event(),
                                                    threading.Event())
        self._deadline = math.inf
        self._dirty = False
        self._outage = 0  # failed attempts since the database last answered
        self._closed = False
        self._journal_broken = False
        self._journal: Journal | None = None
        self._shipped_by_child = 0  # journaled events the shipper process removed
        self._child: ShipperProcess | None = None
        with self._lock:
            self._open_journal()
        if separate_process and self._journal is not None:
            self._start_child()
        self._shipper = threading.Thread(target=self._ship_loop, name="warmline-records",
                                         daemon=True)
        self._flusher = threading.Thread(target=self._flush_loop,
                                         name="warmline-records-fsync", daemon=True)
        self._shipper.start()
        self._flusher.start()

    def add(self, event: Event) -> None:
        """Journal ``event``; when this returns it survives any crash of the process."""
        entry = event.entry()
        with self._lock:
            if self._closed:
                self.lost += 1
                log.error("records: event %s of call %s added after close: lost",
                          event.kind, event.call_id)
                return
            if not self._journaled([entry]):
                self.journal_failures += 1
                self._hold(entry)
        self._dirty = True  # the fsync thread moves it into the table and wakes a shipper
        if self._memory:
            self._wake.set()  # held in memory: this process's thread ships it

    def _wake_shipper(self) -> None:
        child = self._child
        if child is not None and not self._memory:
            child.wake()
        else:
            self._wake.set()

    @property
    def pending(self) -> int:
        """Events not yet in the database: journaled or held in memory (cheap: counters)."""
        journaled = self._journal.count - self._shipped_by_child if self._journal else 0
        return journaled + len(self._memory)

    @property
    def writable(self) -> bool:
        """Whether new events reach the local journal (for /readyz; no I/O). A database
        outage leaves this true: events are safe on disk and ship later. A full disk or
        an unopenable journal makes it false: events would be held in memory only."""
        return self._journal is not None and not self._journal_broken and not self._closed

    def close(self, timeout: float = 5.0) -> None:
        """Ship what can be shipped within ``timeout`` and stop. What is left stays in
        the journal and ships at the next start; a failed attempt ends the wait at once,
        so closing during an outage is quick and loses nothing."""
        self._deadline = time.monotonic() + timeout
        journal = self._journal
        if journal is not None:  # what waits in the intake ships in this close too
            with contextlib.suppress(sqlite3.Error, OSError):
                journal.settle()
        self._closing.set()
        self._wake.set()
        child = self._child
        if child is not None:
            child.close(timeout)
        self._shipper.join(max(0.0, self._deadline - time.monotonic()))
        self._stopped.set()
        self._flusher.join()
        with self._lock:
            self._closed = True
            self._keep_memory()
            if self._journal is not None:
                self._journal.close()
        if self.pending:
            log.warning("records: %d event(s) not yet in the database are kept in %s and "
                        "ship at the next start", self.pending, self.folder / "journal.db")
        if self._engine is not None and not self._shipper.is_alive():
            self._engine.dispose()

    # -- the journal (all under self._lock) ---------------------------------------------
    def _open_journal(self) -> None:
        try:
            self._journal = Journal(self.folder / "journal.db")
        except (sqlite3.Error, OSError) as error:
            self._journal_failed(error)
            return
        try:
            moved = self._journal.import_spill(self.folder / "pending-events.jsonl")
        except (sqlite3.Error, OSError) as error:  # the file stays for the next start
            log.error("records: cannot move pending-events.jsonl into the journal: %s", error)
            return
        if moved:
            log.info("records: %d event(s) from pending-events.jsonl moved to the journal",
                     moved)

    def _journaled(self, entries: list[Entry]) -> bool:
        """Append to the journal (reopening it if it could not be opened before)."""
        if self._journal is None:
            self._open_journal()
            if self._journal is None:
                return False
        try:
            self._journal.append(entries)
        except (sqlite3.Error, OSError) as error:
            self._journal_failed(error)
            return False
        if self._journal_broken:
            self._journal_broken = False
            log.error("records: the journal is writable again")
        return True

    def _journal_failed(self, error: Exception) -> None:
        if not self._journal_broken:
            self._journal_broken = True
            log.error("records: cannot write the journal in %s (%s): events are held in "
                      "memory, not on disk, until it can", self.folder, error)

    def _hold(self, entry: Entry) -> None:
        if len(self._memory) < self.MEMORY_LIMIT:
            self._memory.append(entry)
            return
        self.lost += 1
        if self.lost in (1, 10, 100) or self.lost % 1000 == 0:
            log.error("records: %d event(s) lost: the journal cannot be written and %d "
                      "are held in memory already", self.lost, len(self._memory))

    def _keep_memory(self) -> None:
        """At close: the held events go to the journal, or are counted and logged lost."""
        if not self._memory or self._journaled(self._memory):
            self._memory.clear()
            return
        self.lost += len(self._memory)
        log.error("records: %d event(s) lost at close: the journal cannot be written",
                  len(self._memory))
        self._memory.clear()

    # -- the shipper thread ---------------------------------------------------------------
    def _ship_loop(self) -> None:
        while True:
            self._wake.clear()
            batch = self._next_batch()
            if not batch:
                if self._closing.is_set():
                    return
                self._wake.wait(IDLE_CHECK_SECONDS)  # a wake-up lost to a failed flush
            elif self._ship(batch):
                if time.monotonic() > self._deadline:
                    return
            elif self._closing.is_set():
                return  # the rest ships at the next start
            else:
                self._closing.wait(self.retry_seconds)  # the database is away

    def _next_batch(self) -> list[Entry]:
        """The oldest journaled events, else those held in memory (after trying to
        journal those again: the disk may have room by now)."""
        with self._lock:
            if self._memory and self._journaled(self._memory):
                self._memory.clear()
            journal = None if self._closed or self._child is not None else self._journal
        if journal is not None:
            try:
                batch = journal.oldest(self.BATCH)
            except sqlite3.Error as error:
                log.error("records: cannot read the journal: %s", error)
                batch = []
            if batch:
                return batch
        with self._lock:
            return self._memory[:self.BATCH]

    def _ship(self, batch: list[Entry]) -> bool:
        try:
            if self._engine is None:
                self._engine = connect(self.url)
            insert_events(self._engine, batch)
        except Exception as error:  # any failure (driver missing too): keep and retry
            self._database_failed(error, len(batch))
            return False
        self._database_answers()
        self.written += len(batch)
        return self._forget(batch)

    def _database_answers(self) -> None:
        if self._outage:
            log.info("records: the database answers again after %d failed attempt(s); "
                     "%d event(s) to ship", self._outage, self.pending)
            self._outage = 0

    def _forget(self, batch: list[Entry]) -> bool:
        """The batch is in the database: drop it from the journal or from memory."""
        with self._lock:
            if self._closed:
                return False  # close() gave up waiting; shipped again next start, skipped
            if not batch[0].seq:
                del self._memory[:len(batch)]
                return True
            assert self._journal is not None
            try:
                self._journal.remove(batch[0].seq, batch[-1].seq)
            except sqlite3.Error as error:  # shipped again later, skipped as stored
                self._journal_failed(error)
                return False
            return True

    def _database_failed(self, error: Exception, size: int) -> None:
        self.failures += 1
        self._outage += 1
        if self._outage in (1, 10, 100) or self._outage % 1000 == 0:
            log.warning("records: %d event(s) waiting in the journal, database "
                        "unavailable: %s", max(size, self.pending),
                        (str(error).splitlines() or [type(error).__name__])[0])

    # -- the shipper process --------------------------------------------------------------
    def _start_child(self) -> None:
        try:
            self._child = ShipperProcess(self.folder / "journal.db", self.url,
                                         self.retry_seconds, self._on_child_report,
                                         self._on_child_exit)
        except OSError as error:
            log.error("records: cannot start the shipper process (%s): shipping from a "
                      "thread", error)

    def _on_child_report(self, line: str) -> None:
        """A line from the shipper process (its reader thread calls this)."""
        word, _, rest = line.partition(" ")
        if word == "shipped":
            size, _, removed = rest.partition(" ")
            with self._lock:
                self.written += int(size)
                if removed == "1":
                    self._shipped_by_child += int(size)
            self._database_answers()
        elif word == "failed":
            size, _, error = rest.partition(" ")
            self._database_failed(RuntimeError(error), int(size))
        elif word == "journal":
            log.error("records: the shipper process cannot read or clear the journal: %s",
                      rest)
        else:
            log.warning("records: the shipper process said %.200r", line)

    def _on_child_exit(self, code: int) -> None:
        if self._closing.is_set():
            return
        log.error("records: the shipper process exited (code %d): shipping from a thread",
                  code)
        self._child = None
        self._wake.set()

    # -- the fsync thread -----------------------------------------------------------------
    def _flush_loop(self) -> None:
        """Every FLUSH_SECONDS while events arrive or wait in the intake: move them into
        the journal's table and fsync it (journal.py ``flush``)."""
        failing = False
        while not self._stopped.wait(FLUSH_SECONDS):
            journal = self._journal
            if journal is None or not (self._dirty or journal.unsettled):
                continue
            self._dirty = False
            try:
                moved = journal.flush()
            except Exception as error:  # any failure: logged, retried; the thread lives on
                if not failing:  # once a streak: it is tried again every FLUSH_SECONDS
                    log.error("records: cannot move the journal's intake into its table or "
                              "fsync it (the events wait on disk): %s", error)
                failing = True
                continue
            if failing:
                log.error("records: the journal's intake moves into its table again")
            failing = False
            if moved:
                self._wake_shipper()


def read_call_events(engine: Engine, call_id: str, limit: int = 1000) -> list[Event]:
    """The events of one call, oldest first (at most ``limit``), by the call_id index."""
    query = (select(events_table).where(events_table.c.call_id == call_id)
             .order_by(events_table.c.at, events_table.c.id).limit(limit))
    with engine.connect() as connection:
        rows = connection.execute(query).all()
    return [Event(row.at, row.call_id, row.kind, json.loads(row.data), row.handoff_id)
            for row in rows]


def read_events(engine: Engine, since: float = 0.0, until: float = float("inf")
                ) -> list[Event]:
    """Every event in [since, until), oldest first."""
    query = select(events_table).where(events_table.c.at >= since)
    if until != float("inf"):
        query = query.where(events_table.c.at < until)
    with engine.connect() as connection:
        rows = connection.execute(query.order_by(events_table.c.at, events_table.c.id)).all()
    return [Event(row.at, row.call_id, row.kind, json.loads(row.data), row.handoff_id)
            for row in rows]
