"""The records: an append-only event log per call and handoff, on SQLite or PostgreSQL.

One schema and one code path for both (SQLAlchemy Core; psycopg 3 for
PostgreSQL): ``sqlite:///warmline-records/records.db`` by default, a
``postgresql+psycopg://...`` URL for several engines sharing state. The
tables are created on first use, with a schema version row for migrations.

Events are written from a thread of their own, never on the call path: the
engine queues them and carries on. If the database is unreachable, the
queue waits and retries with back-off, keeping every event; at shutdown
whatever could not be written is spilled to ``pending-events.jsonl`` next to
the records and replayed at the next start. Nothing is lost.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    insert,
    select,
)
from sqlalchemy.exc import SQLAlchemyError

log = logging.getLogger("warmline.records")
SCHEMA_VERSION = 1
metadata = MetaData()
events_table = Table(
    "warmline_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("at", Float, nullable=False, index=True),
    Column("call_id", String(64), nullable=False, index=True),
    Column("handoff_id", String(64), nullable=True, index=True),
    Column("kind", String(64), nullable=False, index=True),
    Column("data", Text, nullable=False),
)
schema_table = Table("warmline_schema", metadata, Column("version", Integer, nullable=False))


@dataclass(frozen=True)
class Event:
    at: float
    call_id: str
    kind: str
    data: dict[str, Any]
    handoff_id: str | None = None

    def row(self) -> dict[str, Any]:
        return {"at": self.at, "call_id": self.call_id, "handoff_id": self.handoff_id,
                "kind": self.kind, "data": json.dumps(self.data, default=str)}


def default_url(folder: Path) -> str:
    return f"sqlite:///{folder / 'records.db'}"


def connect(url: str) -> Engine:
    """An engine for ``url`` with the tables in place (created if missing)."""
    engine = create_engine(url, pool_pre_ping=True)
    metadata.create_all(engine)
    with engine.begin() as connection:
        if connection.execute(select(schema_table.c.version)).first() is None:
            connection.execute(insert(schema_table).values(version=SCHEMA_VERSION))
    return engine


class RecordWriter:
    """Queues events and writes them in batches from a thread; survives a database outage."""

    def __init__(self, url: str, spill: Path, retry_seconds: float = 0.5) -> None:
        self.url = url
        self.spill = spill
        self.retry_seconds = retry_seconds
        self._queue: queue.Queue[Event | None] = queue.Queue()
        self._engine: Engine | None = None
        self.written = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="warmline-records", daemon=True)
        self._replay_spill()
        self._thread.start()

    def add(self, event: Event) -> None:
        self._queue.put(event)

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (up to ``timeout``); spill the rest to the file."""
        self._queue.put(None)
        self._thread.join(timeout)
        left = self._drain()
        if left:
            self._spill(left)
        if self._engine is not None:
            self._engine.dispose()

    # -- the writer thread ------------------------------------------------------------
    def _run(self) -> None:
        batch: list[Event] = []
        stopping = False
        while not (stopping and not batch):
            if not batch:
                item = self._queue.get()
                if item is None:
                    stopping = True
                    continue
                batch.append(item)
            while len(batch) < 500:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stopping = True
                    break
                batch.append(item)
            if self._write(batch):
                batch = []
            elif stopping:
                self._spill(batch)
                return
            else:
                time.sleep(self.retry_seconds)  # the database is away: keep the batch

    def _write(self, batch: list[Event]) -> bool:
        try:
            if self._engine is None:
                self._engine = connect(self.url)
            with self._engine.begin() as connection:
                connection.execute(insert(events_table), [event.row() for event in batch])
        except SQLAlchemyError as error:
            self.failures += 1
            if self.failures in (1, 10, 100) or self.failures % 1000 == 0:
                log.warning("records: %d event(s) waiting, database unavailable: %s",
                            len(batch) + self.pending, str(error).splitlines()[0])
            return False
        self.written += len(batch)
        return True

    def _drain(self) -> list[Event]:
        left: list[Event] = []
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return left
            if item is not None:
                left.append(item)

    def _spill(self, events: Iterable[Event]) -> None:
        self.spill.parent.mkdir(parents=True, exist_ok=True)
        with self.spill.open("a", encoding="utf-8") as file:
            for event in events:
                file.write(json.dumps(event.row()) + "\n")

    def _replay_spill(self) -> None:
        if not self.spill.exists():
            return
        replay = self.spill.with_suffix(".replaying")
        self.spill.rename(replay)
        for line in replay.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            self._queue.put(Event(row["at"], row["call_id"], row["kind"], json.loads(row["data"]),
                                  row["handoff_id"]))
        replay.unlink()


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
