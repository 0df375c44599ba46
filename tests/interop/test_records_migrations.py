"""The records schema under Alembic, on SQLite and on the PostgreSQL running here.

- the models (store.metadata) and the migrations agree: Alembic's autogenerate
  compare finds no difference after upgrading a new database;
- a database made before Alembic (metadata.create_all, warmline_schema 2, rows in
  it) is adopted: stamped at the baseline, every row kept, no difference;
- two nodes starting at once on one new PostgreSQL both come up (the advisory
  lock), and two nodes writing it at once never collide (ids from the
  sequence, random uids): every event stored once, ids unique;
- ``warmline db upgrade`` does the same from the command line.

A scratch PostgreSQL database per test, created and dropped here.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, insert, select

from tests.interop.postgres import scratch_database
from warmline.cli import main
from warmline.records import migrate
from warmline.records.store import (
    Event,
    RecordWriter,
    connect,
    events_table,
    metadata,
    read_events,
    schema_table,
)

pytestmark = pytest.mark.interop


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'records.db'}"
        return
    with scratch_database("warmline_mig") as url:
        yield url


def head() -> str:
    with create_engine("sqlite://").connect() as connection:
        script = ScriptDirectory.from_config(migrate.alembic_config(connection))
    revision = script.get_current_head()
    assert revision is not None
    return revision


def differences(engine: Engine) -> list[object]:
    with engine.connect() as connection:
        return list(compare_metadata(MigrationContext.configure(connection), metadata))


def shipped(writer: RecordWriter, timeout: float = 10.0) -> None:
    """Until the writer's shipper has stored everything (its first connect migrates)."""
    deadline = time.monotonic() + timeout
    while writer.pending and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not writer.pending, f"{writer.pending} event(s) not shipped"


def revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return migrate.current_revision(connection)


def test_a_new_database_is_migrated_to_head_and_matches_the_models(database_url: str) -> None:
    engine = connect(database_url)
    try:
        assert revision(engine) == head()
        assert differences(engine) == []
        with engine.connect() as connection:
            assert connection.execute(select(schema_table.c.version)).scalars().all() == [2]
        assert migrate.upgrade(engine) == head()  # a second start: nothing to do
    finally:
        engine.dispose()


def test_a_database_made_before_alembic_is_adopted_with_its_rows(database_url: str,
                                                                 tmp_path: Path) -> None:
    old = create_engine(database_url)
    metadata.create_all(old)  # what warmline did before Alembic
    with old.begin() as connection:
        connection.execute(insert(schema_table).values(version=2))
        connection.execute(insert(events_table), [
            {"at": float(n), "call_id": "old", "kind": "call.started", "data": "{}",
             "uid": uuid.uuid4().hex} for n in range(3)])
    old.dispose()
    writer = RecordWriter(database_url, tmp_path / "records")
    writer.add(Event(10.0, "new", "call.started", {}))
    shipped(writer)
    writer.close()
    engine = connect(database_url)
    try:
        assert revision(engine) == head()
        assert differences(engine) == []
        assert sorted(e.call_id for e in read_events(engine)) == ["new", "old", "old", "old"]
    finally:
        engine.dispose()


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)  # SQLite: one node's
def test_two_nodes_start_and_write_one_database_at_once(database_url: str,
                                                        tmp_path: Path) -> None:
    errors: list[BaseException] = []

    def node(name: str) -> None:
        try:
            writer = RecordWriter(database_url, tmp_path / name)
            for n in range(200):
                writer.add(Event(float(n), f"{name}-{n % 7}", "call.started", {"n": n}))
            shipped(writer)
            writer.close()
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=node, args=(name,)) for name in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not errors
    engine = connect(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(events_table.c.id, events_table.c.uid)).all()
        assert len(rows) == 400
        assert len({row.id for row in rows}) == 400 and len({row.uid for row in rows}) == 400
        assert revision(engine) == head()
    finally:
        engine.dispose()


def test_warmline_db_upgrade(database_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "upgrade", "--db", database_url]) == 0
    assert head() in capsys.readouterr().out
    engine = create_engine(database_url)
    try:
        assert revision(engine) == head() and differences(engine) == []
    finally:
        engine.dispose()
