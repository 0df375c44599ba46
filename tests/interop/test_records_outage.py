"""No lost records (issue 12), on the PostgreSQL running here and on SQLite: exact counts.

PostgreSQL "goes down" for one test only: the writer reaches it through a TCP
relay that the test stops (refused connections, open ones cut) and starts again.
SQLite is down while its folder is missing. ``kill -9`` is a child process,
bounded by a timeout and killed by its PID.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from tests.interop.tcp_relay import TcpRelay
from warmline.records.store import Event, RecordWriter

pytestmark = pytest.mark.interop
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"


@dataclass
class Database:
    """A database the test can take down and bring back."""

    url: str
    down: Callable[[], None]
    up: Callable[[], None]


@pytest.fixture
def postgres() -> Iterator[Database]:
    """A fresh PostgreSQL database behind a relay of this test's own (dropped after)."""
    name = f"warmline_t_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES.format(port=5432, database="postgres"),
                          isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    relay = TcpRelay("127.0.0.1", 5432)
    relay.start()
    try:
        yield Database(POSTGRES.format(port=relay.port, database=name), relay.stop, relay.start)
    finally:
        relay.stop()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def sqlite(tmp_path: Path) -> Database:
    """SQLite is unreachable while its folder is missing."""
    folder = tmp_path / "db"
    folder.mkdir()
    return Database(f"sqlite:///{folder / 'records.db'}",
                    lambda: folder.rename(tmp_path / "db-away"),
                    lambda: (tmp_path / "db-away").rename(folder))


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest) -> Database:
    return request.getfixturevalue("postgres" if request.param == "postgresql" else "sqlite")


def events(count: int, start: int = 0) -> list[Event]:
    return [Event(1_790_000_000.0 + n, f"call-{n % 400}", "call.turn", {"n": n})
            for n in range(start, start + count)]


def stored(url: str) -> tuple[int, int]:
    """(rows, distinct uids) in the database."""
    engine = create_engine(url)
    with engine.connect() as connection:
        counts = connection.execute(
            text("SELECT count(*), count(DISTINCT uid) FROM warmline_events")).one()
    engine.dispose()
    return counts[0], counts[1]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_postgres_outage_recovery_and_a_clean_close_lose_nothing(
        postgres: Database, tmp_path: Path) -> None:
    """The issue's case: the database goes away under load, then the engine stops."""
    folder = tmp_path / "records"
    writer = RecordWriter(postgres.url, folder, retry_seconds=0.05)
    for event in events(100):
        writer.add(event)
    wait_until(lambda: writer.pending == 0)
    postgres.down()
    for event in events(400, 100):
        writer.add(event)
    wait_until(lambda: writer.failures >= 2)
    assert writer.pending == 400  # the metric tells the truth during the outage
    postgres.up()
    wait_until(lambda: writer.pending == 0)
    assert stored(postgres.url) == (500, 500)
    postgres.down()
    for event in events(800, 500):
        writer.add(event)
    writer.close(timeout=2)
    assert (writer.pending, writer.lost) == (800, 0)
    postgres.up()
    again = RecordWriter(postgres.url, folder)
    again.close()
    assert stored(postgres.url) == (1300, 1300) and again.written == 800


CHILD = """
import os, signal, sys, threading, time
from pathlib import Path
from warmline.records.store import Event, RecordWriter

url, folder, count, mode = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
added = threading.Event()
if mode == "crash-after-commit":  # dies between the database's commit and the delete
    def forget(self, batch):
        added.wait(10)
        os.kill(os.getpid(), signal.SIGKILL)
    RecordWriter._forget = forget
# the hook is in this process's shipping thread (the shipper process runs the same insert)
writer = RecordWriter(url, folder, retry_seconds=0.05,
                      separate_process=mode != "crash-after-commit")
for n in range(count):
    writer.add(Event(1_790_000_000.0 + n, "call-%d" % (n % 400), "call.turn", {"n": n}))
print("added", writer.pending, flush=True)
added.set()
if mode == "kill-right-after-add":  # not a microsecond for the shipper or the fsync thread
    os.kill(os.getpid(), signal.SIGKILL)
time.sleep(30)
"""


def run_child(url: str, folder: Path, count: int, mode: str) -> subprocess.Popen[str]:
    """The child, once every add() returned (it says so); killed by the caller."""
    child = subprocess.Popen([sys.executable, "-c", CHILD, url, str(folder), str(count), mode],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    ready, _, _ = select.select([child.stdout], [], [], 20)
    if not ready:
        child.kill()
        pytest.fail("the child did not add its events in 20 s")
    assert child.stdout.readline().split() == ["added", str(count)]
    return child


def test_kill_9_during_an_outage_loses_nothing(database: Database, tmp_path: Path) -> None:
    folder, count = tmp_path / "records", 1000
    database.down()
    child = run_child(database.url, folder, count, "outage")
    try:
        time.sleep(0.2)  # the shipper is retrying
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(5) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait(5)
    database.up()
    writer = RecordWriter(database.url, folder)
    writer.close()
    assert stored(database.url) == (count, count) and writer.written == count


def test_kill_9_the_instant_add_returned_loses_nothing(database: Database,
                                                       tmp_path: Path) -> None:
    """Durable when add() returns: the child kills itself right after its last add."""
    folder, count = tmp_path / "records", 1000
    database.down()
    child = run_child(database.url, folder, count, "kill-right-after-add")
    try:
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait(5)
    database.up()
    writer = RecordWriter(database.url, folder)
    writer.close()
    assert stored(database.url) == (count, count) and writer.written == count


def test_a_crash_between_commit_and_journal_delete_stores_once(
        database: Database, tmp_path: Path) -> None:
    """The batch is in the database and still in the journal: shipped again, skipped."""
    folder, count = tmp_path / "records", 300
    child = run_child(database.url, folder, count, "crash-after-commit")
    try:
        assert child.wait(10) == -signal.SIGKILL  # killed itself right after a commit
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait(5)
    first = stored(database.url)[0]
    assert first > 0  # a batch did reach the database before the crash
    writer = RecordWriter(database.url, folder)
    writer.close()
    assert writer.written == count  # every journaled event shipped again ...
    assert stored(database.url) == (count, count)  # ... and stored once
