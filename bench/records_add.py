"""What RecordWriter.add costs the caller's thread (the event loop carrying the calls).

add() commits each event to the local journal before it returns (records/journal.py),
so its cost is a SQLite transaction in WAL mode, measured here while the shipper
thread moves events to a SQLite database, and with that database unreachable (the
journal only grows). For comparison: the same insert with synchronous=FULL, i.e. an
fsync inside every add.

Run: .venv/bin/python bench/records_add.py [--events 5000]
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from warmline.records.store import Event, RecordWriter


def measure(url: str, folder: Path, events: int) -> list[float]:
    writer = RecordWriter(url, folder)
    took = []
    for n in range(events):
        event = Event(time.time(), f"call-{n % 400}", "call.turn",
                      {"speaker": "caller", "text": "I was charged twice this month."})
        started = time.perf_counter()
        writer.add(event)
        took.append(time.perf_counter() - started)
    writer.close(timeout=10)
    return took


def fsync_each(folder: Path, events: int) -> list[float]:
    db = sqlite3.connect(folder / "full.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE j (seq INTEGER PRIMARY KEY, uid TEXT UNIQUE, data TEXT)")
    took = []
    for n in range(events):
        started = time.perf_counter()
        db.execute("INSERT INTO j (uid, data) VALUES (?, ?)", (f"{n:032x}", "x" * 120))
        took.append(time.perf_counter() - started)
    db.close()
    return took


def show(label: str, took: list[float]) -> None:
    ordered = sorted(took)
    print(f"{label:<44} mean {statistics.fmean(took) * 1e6:7.1f} us  "
          f"p50 {ordered[len(ordered) // 2] * 1e6:7.1f} us  "
          f"p99 {ordered[int(len(ordered) * 0.99)] * 1e6:7.1f} us  "
          f"max {ordered[-1] * 1e6:8.1f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the unreachable database's warnings are expected
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        show("add(), shipping to SQLite", measure(
            f"sqlite:///{root / 'records.db'}", root / "a", args.events))
        show("add(), database unreachable", measure(
            f"sqlite:///{root / 'missing' / 'records.db'}", root / "b", args.events))
        show("bare insert, synchronous=FULL (for scale)", fsync_each(root, args.events))


if __name__ == "__main__":
    main()
