"""The records' local journal: no event lost through outages, closes, crashes or a full disk.

The "database" is SQLite here; it is down while its folder is missing (SQLite
cannot open the file) and back once the folder exists. PostgreSQL, the network
outage and ``kill -9`` are in tests/interop/test_records_outage.py.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from warmline.records import store
from warmline.records.journal import Journal
from warmline.records.shipper import Control, ship
from warmline.records.store import Event, RecordWriter, connect, insert_events, read_events


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def events(count: int, start: int = 0) -> list[Event]:
    return [Event(1_790_000_000.0 + n, f"call-{n % 40}", "call.turn", {"n": n})
            for n in range(start, start + count)]


def stored(url: str) -> tuple[int, int]:
    """(rows, distinct uids) in the database."""
    engine = create_engine(url)
    with engine.connect() as connection:
        rows, uids = connection.execute(
            text("SELECT count(*), count(DISTINCT uid) FROM warmline_events")).one()
    engine.dispose()
    return rows, uids


def journaled(folder: Path) -> int:
    db = sqlite3.connect(folder / "journal.db")
    count: int = db.execute("SELECT count(*) FROM journal").fetchone()[0]
    db.close()
    return count


@pytest.fixture
def down(tmp_path: Path) -> tuple[str, Path]:
    """A database URL that is unreachable until the returned folder is created."""
    folder = tmp_path / "db"
    return f"sqlite:///{folder / 'records.db'}", folder


def test_an_outage_then_recovery_stores_every_event_once(
        down: tuple[str, Path], tmp_path: Path) -> None:
    url, db_folder = down
    writer = RecordWriter(url, tmp_path / "records", retry_seconds=0.02)
    for event in events(800):
        writer.add(event)
    assert writer.pending == 800  # on disk, not yet in the database
    wait_until(lambda: writer.failures >= 3)
    assert writer.pending == 800 and writer.written == 0
    db_folder.mkdir()  # the database is back
    wait_until(lambda: writer.pending == 0)
    writer.close()
    assert stored(url) == (800, 800) and writer.written == 800 and writer.lost == 0
    assert journaled(tmp_path / "records") == 0


def test_a_clean_close_in_an_outage_keeps_everything_for_the_next_start(
        down: tuple[str, Path], tmp_path: Path) -> None:
    url, db_folder = down
    folder = tmp_path / "records"
    writer = RecordWriter(url, folder, retry_seconds=0.02)
    for event in events(800):
        writer.add(event)
    wait_until(lambda: writer.failures > 0)
    started = time.monotonic()
    writer.close(timeout=10)
    assert time.monotonic() - started < 2.0  # a failed attempt ends the wait, not 10 s
    assert (writer.pending, writer.lost, journaled(folder)) == (800, 0, 800)
    assert not (folder / "pending-events.jsonl").exists()
    db_folder.mkdir()
    again = RecordWriter(url, folder)
    again.close()
    assert again.written == 800
    assert stored(url) == (800, 800) and again.pending == 0 and journaled(folder) == 0


def test_a_batch_shipped_twice_is_stored_once(tmp_path: Path) -> None:
    """A crash between the database's commit and the journal's delete: shipped again."""
    url, folder = f"sqlite:///{tmp_path / 'records.db'}", tmp_path / "records"
    journal = Journal(folder / "journal.db")
    journal.append([event.entry() for event in events(50)])
    journal.settle()  # the intake into the table the shippers read
    engine = connect(url)
    insert_events(engine, journal.oldest(500))  # committed; then the process "dies"
    engine.dispose()
    journal.close()
    assert stored(url) == (50, 50) and journaled(folder) == 50
    writer = RecordWriter(url, folder)
    writer.close()
    assert stored(url) == (50, 50) and writer.written == 50 and journaled(folder) == 0



def test_a_journal_of_the_first_layout_keeps_its_events_in_the_cheaper_one(
        tmp_path: Path) -> None:
    """Journals written before the plain rowid table (AUTOINCREMENT, a UNIQUE uid) are
    converted at open, their events and order kept, and ship as before."""
    url, folder = f"sqlite:///{tmp_path / 'records.db'}", tmp_path / "records"
    folder.mkdir()
    db = sqlite3.connect(folder / "journal.db")
    db.execute("""CREATE TABLE journal (seq INTEGER PRIMARY KEY AUTOINCREMENT,
        uid TEXT NOT NULL UNIQUE, at REAL NOT NULL, call_id TEXT NOT NULL, handoff_id TEXT,
        kind TEXT NOT NULL, data TEXT NOT NULL)""")
    entries = [event.entry() for event in events(4)]
    db.executemany("INSERT INTO journal (seq, uid, at, call_id, handoff_id, kind, data) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)",
                   [(10 + n, *entry.values()) for n, entry in enumerate(entries)])
    db.commit()
    db.close()
    journal = Journal(folder / "journal.db")
    assert [(e.seq, e.uid) for e in journal.oldest(10)] == [
        (10 + n, entry.uid) for n, entry in enumerate(entries)]
    journal.append([events(1, start=4)[0].entry()])
    journal.settle()  # the intake into the table the shippers read
    assert journal.oldest(10)[-1].seq == 14 and journal.count == 5
    journal.close()
    db = sqlite3.connect(folder / "journal.db")
    (layout,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'journal'").fetchone()
    db.close()
    assert "AUTOINCREMENT" not in layout and "UNIQUE" not in layout
    writer = RecordWriter(url, folder)
    writer.close()
    assert stored(url) == (5, 5) and journaled(folder) == 0


@pytest.mark.parametrize("dialect_upsert", [True, False], ids=["upsert", "select-first"])
def test_an_event_journaled_twice_is_stored_once(tmp_path: Path, dialect_upsert: bool,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal does not refuse a uid it holds (no index to pay for on every add);
    the database insert skips the second, in the same batch or a later one, with an
    upsert (PostgreSQL, SQLite) or by looking first (any other database)."""
    if not dialect_upsert:
        monkeypatch.setattr(store, "_insert_skipping_stored", lambda dialect: None)
    url = f"sqlite:///{tmp_path / 'records.db'}"
    journal = Journal(tmp_path / "records" / "journal.db")
    entry = events(1)[0].entry()
    journal.append([entry, entry])
    journal.settle()  # the intake into the table the shippers read
    engine = connect(url)
    insert_events(engine, journal.oldest(10))
    insert_events(engine, [entry])
    engine.dispose()
    journal.close()
    assert stored(url) == (1, 1)


def test_what_a_crash_left_in_the_intake_ships_once_at_the_next_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An add that returned is in the intake file (one write()); a crash can leave the
    intake, a file being moved (``journal.settling``, here already committed to the
    table before the crash: moved again, stored once) and a line torn by a power cut."""
    url, folder = f"sqlite:///{tmp_path / 'records.db'}", tmp_path / "records"
    journal = Journal(folder / "journal.db")
    first = [event.entry() for event in events(3)]
    journal.append(first)
    journal.settle()  # committed to the table ...
    journal.append(first)  # ... and, as a crash before the unlink leaves it, still a file
    journal._intake.rotate()  # type: ignore[union-attr]
    later = [event.entry() for event in events(4, start=3)]
    journal.append(later)
    journal._intake.close()  # type: ignore[union-attr]  # the process "dies"
    (folder / "journal.intake").open("ab").write(b'["torn", 1.0, "call-')
    assert sorted(path.name for path in folder.iterdir() if "intake" in path.name
                  or "settling" in path.name) == ["journal.intake", "journal.settling"]
    writer = RecordWriter(url, folder)
    writer.close()
    assert stored(url) == (7, 7) and writer.lost == 0
    assert "is not a whole event, skipped" in caplog.text
    assert not (folder / "journal.intake").exists()
    assert not (folder / "journal.settling").exists()


def test_a_full_table_keeps_events_in_the_intake_on_disk_until_it_has_room(
        down: tuple[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SQLite refusing the move (its disk full, the intake's not): adds still return,
    the events wait in the intake file (fsynced), counted, and move once there is room."""
    url, db_folder = down
    writer = RecordWriter(url, tmp_path / "records")
    journal = writer._journal
    assert journal is not None
    pages = journal._checkpointer.execute("PRAGMA page_count").fetchone()[0]
    journal._checkpointer.execute(f"PRAGMA max_page_count = {pages}")
    for event in events(500):
        writer.add(event)
    wait_until(lambda: "cannot move the journal's intake" in caplog.text)
    assert writer.pending == 500 and writer.journal_failures == 0 and writer.writable
    assert (tmp_path / "records" / "journal.settling").stat().st_size > 0
    journal._checkpointer.execute("PRAGMA max_page_count = 1073741823")
    db_folder.mkdir()
    wait_until(lambda: writer.pending == 0)
    writer.close()
    assert stored(url) == (500, 500) and writer.lost == 0
    assert "intake moves into its table again" in caplog.text


def test_a_move_failing_at_start_leaves_the_journal_working(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    """What a crash left in the intake cannot be moved at start (the disk full, say): the
    writer still starts, takes events, and the fsync thread moves it all once it can."""
    url, folder = f"sqlite:///{tmp_path / 'records.db'}", tmp_path / "records"
    journal = Journal(folder / "journal.db")
    journal.append([event.entry() for event in events(5)])
    journal._intake.close()  # type: ignore[union-attr]  # the process "dies"
    settle = Journal._settle
    failures = iter([True])

    def full_once(self: Journal) -> int:
        if next(failures, False):
            raise sqlite3.OperationalError("database or disk is full")
        return settle(self)

    monkeypatch.setattr(Journal, "_settle", full_once)
    writer = RecordWriter(url, folder)
    assert "cannot move the journal's intake into its table at start" in caplog.text
    assert writer.writable and writer.pending == 0  # (uncounted until moved)
    for event in events(5, start=5):
        writer.add(event)
    wait_until(lambda: writer.written == 10)  # the shipper's reports: all ten in the database
    writer.close()
    assert stored(url) == (10, 10) and writer.lost == 0


def test_a_write_torn_by_a_full_disk_costs_only_its_own_events(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that stops half-way raises (the add is not acknowledged); when the torn
    bytes cannot even be cut back, the next event starts on a line of its own."""
    from warmline.records import intake as intake_module
    from warmline.records.intake import Intake

    box = Intake(tmp_path / "journal.intake")
    rows = [entry.values() for entry in (event.entry() for event in events(3))]
    box.append([rows[0]])
    write, truncate = os.write, os.ftruncate

    def half(fd: int, data: bytes) -> int:
        write(fd, bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def cannot(fd: int, size: int) -> None:
        raise OSError(errno.EIO, os.strerror(errno.EIO))

    monkeypatch.setattr(os, "write", half)
    monkeypatch.setattr(os, "ftruncate", cannot)
    with pytest.raises(OSError):
        box.append([rows[1]])
    monkeypatch.setattr(os, "write", write)
    monkeypatch.setattr(os, "ftruncate", truncate)
    box.append([rows[2]])
    box.close()
    assert intake_module.read(box.path) == [rows[0], rows[2]] and box.count == 2

def test_pending_counts_exactly_what_is_not_in_the_database(
        down: tuple[str, Path], tmp_path: Path) -> None:
    url, db_folder = down
    folder = tmp_path / "records"
    writer = RecordWriter(url, folder, retry_seconds=0.02)
    seen = []
    for n, event in enumerate(events(120), 1):
        writer.add(event)
        if n in (1, 10, 120):
            seen.append(writer.pending)
    assert seen == [1, 10, 120]
    writer.close(timeout=0.2)
    writer = RecordWriter(url, folder, retry_seconds=0.02)
    assert writer.pending == 120  # read from the journal at start
    db_folder.mkdir()
    wait_until(lambda: writer.pending == 0)
    assert stored(url)[0] == 120
    writer.add(events(1, 500)[0])
    wait_until(lambda: writer.pending == 0)
    writer.close()
    assert stored(url) == (121, 121)


def test_adds_from_several_threads_while_shipping(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'records.db'}"
    writer = RecordWriter(url, tmp_path / "records")

    def add(start: int) -> None:
        for event in events(250, start):
            writer.add(event)

    threads = [threading.Thread(target=add, args=(n * 1000,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    writer.close()
    assert stored(url) == (1000, 1000) and writer.pending == 0


def test_the_old_spill_file_moves_into_the_journal(tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Installs from before the journal left pending-events.jsonl (and, after a crash
    while replaying it, pending-events.replaying): both are shipped, once."""
    url, folder = f"sqlite:///{tmp_path / 'records.db'}", tmp_path / "records"
    folder.mkdir()
    old = [json.dumps({"at": 1.0 + n, "call_id": "A", "handoff_id": None, "kind": "k",
                       "data": json.dumps({"n": n})}) for n in range(5)]
    (folder / "pending-events.replaying").write_text("\n".join(old[:2]) + "\n")
    (folder / "pending-events.jsonl").write_text("\n".join(old[2:]) + '\n{"at": 9.0, "ca')
    journal = Journal(folder / "journal.db")
    assert journal.import_spill(folder / "pending-events.jsonl") == 5
    (folder / "pending-events.jsonl").write_text("\n".join(old[2:]) + "\n")
    # a crash before the unlink leaves the file to replay: it adds nothing
    assert journal.import_spill(folder / "pending-events.jsonl") == 0
    assert journal.count == 5
    assert not (folder / "pending-events.jsonl").exists()
    journal.close()
    assert "not an event, skipped" in caplog.text  # the torn last line
    (folder / "pending-events.jsonl").write_text(old[0] + "\n")  # left by another old run
    writer = RecordWriter(url, folder)
    writer.close()
    engine = connect(url)
    assert [e.data["n"] for e in read_events(engine)] == [0, 0, 1, 2, 3, 4]
    engine.dispose()
    assert sorted(path.name for path in folder.iterdir()) == ["journal.db"]


def test_a_version_1_database_gains_the_uid_column(tmp_path: Path) -> None:
    """A records.db made before the journal keeps its rows and takes new ones."""
    path, folder = tmp_path / "records.db", tmp_path / "records"
    db = sqlite3.connect(path)
    db.executescript("""
        CREATE TABLE warmline_events (id INTEGER NOT NULL, at FLOAT NOT NULL,
            call_id VARCHAR(64) NOT NULL, handoff_id VARCHAR(64), kind VARCHAR(64) NOT NULL,
            data TEXT NOT NULL, PRIMARY KEY (id));
        CREATE TABLE warmline_schema (version INTEGER NOT NULL);
        INSERT INTO warmline_schema VALUES (1);
        INSERT INTO warmline_events (at, call_id, kind, data) VALUES (1.0, 'A', 'old', '{}');
        INSERT INTO warmline_events (at, call_id, kind, data) VALUES (2.0, 'A', 'old', '{}');
    """)
    db.close()
    writer = RecordWriter(f"sqlite:///{path}", folder)
    for event in events(3):
        writer.add(event)
    writer.close()
    connect(f"sqlite:///{path}").dispose()  # a second start migrates nothing
    db = sqlite3.connect(path)
    assert db.execute("SELECT version FROM warmline_schema").fetchall() == [(2,)]
    assert db.execute("SELECT count(*), count(uid) FROM warmline_events").fetchone() == (5, 3)
    index = db.execute("SELECT sql FROM sqlite_master WHERE name = 'ix_warmline_events_uid'")
    assert "UNIQUE" in index.fetchone()[0]
    db.close()


def fill_journal(writer: RecordWriter) -> Callable[[], None]:
    """Make the journal's disk "full": the intake's write fails with ENOSPC and SQLite's
    page limit raises the same SQLITE_FULL as a full disk; returns what frees it."""
    journal = writer._journal
    assert journal is not None and journal._intake is not None
    connections = [journal._db, journal._checkpointer]
    for db in connections:  # the limit is a connection's
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")
    intake = journal._intake

    def no_space(rows: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    setattr(intake, "append", no_space)  # noqa: B010  (an instance's method, for a test)

    def free() -> None:
        for db in connections:
            db.execute("PRAGMA max_page_count = 1073741823")
        delattr(intake, "append")

    return free


def test_a_full_journal_disk_neither_fails_add_nor_loses_events(
        down: tuple[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url, db_folder = down
    writer = RecordWriter(url, tmp_path / "records", retry_seconds=0.02)
    free = fill_journal(writer)
    for event in events(2000):
        writer.add(event)  # never raises
    assert writer.journal_failures > 0 and writer.pending == 2000 and writer.lost == 0
    assert "cannot write the journal" in caplog.text and not writer.writable  # /readyz
    db_folder.mkdir()  # the database answers while the disk is still full: from memory
    wait_until(lambda: writer.pending == 0)
    free()
    writer.add(events(1, 5000)[0])
    assert writer.writable
    writer.close()
    assert stored(url) == (2001, 2001) and writer.lost == 0


def test_a_full_disk_at_close_during_an_outage_is_counted_as_lost(
        down: tuple[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The one case where events can go: never silently."""
    url, _ = down
    writer = RecordWriter(url, tmp_path / "records", retry_seconds=0.02)
    fill_journal(writer)
    with caplog.at_level(logging.ERROR, "warmline.records"):
        for event in events(2000):
            writer.add(event)
        held = writer.pending - journaled(tmp_path / "records")
        writer.close(timeout=0.2)
    assert held > 0 and writer.lost == held
    assert f"{held} event(s) lost at close" in caplog.text


def test_shipping_runs_in_a_process_of_its_own(tmp_path: Path) -> None:
    """The database work is off the engine's process (and its GIL): this process never
    opens the database, and the URL (a password in it) is not on the child's command line."""
    url = f"sqlite:///{tmp_path / 'records.db'}"
    writer = RecordWriter(url, tmp_path / "records")
    child = writer._child
    assert child is not None and child.pid != os.getpid()
    command_line = Path(f"/proc/{child.pid}/cmdline").read_bytes()
    assert b"warmline.records.shipper" in command_line and url.encode() not in command_line
    for event in events(1200):
        writer.add(event)
    wait_until(lambda: writer.pending == 0)
    assert writer.written == 1200 and writer._engine is None
    writer.close()
    assert stored(url) == (1200, 1200) and journaled(tmp_path / "records") == 0



def test_a_burst_of_events_wakes_the_shipper_a_few_times_and_ships_every_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """add() only writes the intake; the fsync thread moves it into the table and then
    wakes the shipper process: a wake-up (a write and a process switch) is not paid per
    event on the event loop."""
    url = f"sqlite:///{tmp_path / 'records.db'}"
    writer = RecordWriter(url, tmp_path / "records")
    assert writer._child is not None
    wakes = 0
    write = os.write

    def counted(fd: int, data: bytes) -> int:
        nonlocal wakes
        wakes += data == b"w"
        return write(fd, data)

    monkeypatch.setattr(os, "write", counted)
    for event in events(300):
        writer.add(event)
    wait_until(lambda: writer.pending == 0)
    assert 1 <= wakes < 50
    writer.close()
    assert stored(url) == (300, 300)


def test_a_killed_shipper_process_hands_over_to_a_thread_and_loses_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    url = f"sqlite:///{tmp_path / 'records.db'}"
    writer = RecordWriter(url, tmp_path / "records")
    child = writer._child
    assert child is not None
    for event in events(700):
        writer.add(event)
    os.kill(child.pid, signal.SIGKILL)
    for event in events(700, 700):
        writer.add(event)
    wait_until(lambda: writer.pending == 0)
    assert writer._child is None and "shipper process exited" in caplog.text
    writer.close()
    assert stored(url) == (1400, 1400) and writer.lost == 0


def test_the_shipper_waits_out_its_retry_however_many_events_arrive(
        down: tuple[str, Path], tmp_path: Path) -> None:
    """A database that is down is tried again every retry_seconds, not at each wake-up the
    engine sends for a new event (thousands a second on a busy node)."""
    url, _ = down
    journal = Journal(tmp_path / "records" / "journal.db")
    journal.append([event.entry() for event in events(10)])
    journal.settle()  # the intake into the table the shippers read
    read_end, write_end = os.pipe()

    def busy_engine() -> None:
        deadline = time.monotonic() + 0.6
        while time.monotonic() < deadline:
            os.write(write_end, b"w")
            time.sleep(0.001)
        os.write(write_end, b"c0\n")

    sender = threading.Thread(target=busy_engine)
    sender.start()
    reports = io.StringIO()
    ship(journal, url, 0.2, Control(read_end), reports)
    sender.join()
    os.close(read_end)
    os.close(write_end)
    journal.close()
    attempts = reports.getvalue().count("failed 10 ")
    assert 2 <= attempts <= 5, reports.getvalue()[:500]
