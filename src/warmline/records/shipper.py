"""The records shipper: a process of its own that copies the journal into the database.

Why a process: shipping is SQLAlchemy building and running an insert of up to
500 rows, then a delete in the journal, all while calls are up. In a thread it
held the GIL for about a tenth of the engine's time at a few hundred transfer
cycles a second, time the event loop carrying the calls' signalling and audio
had to wait for. In its own process it costs the calls nothing but a byte
written to a pipe per event.

The journal (journal.py) is the hand-over: the engine commits each event there
before ``RecordWriter.add`` returns, this process reads the oldest events on
its own SQLite connection (WAL: readers never block the engine's appends),
inserts them (idempotent by uid) and deletes them from the journal only after
the database committed. A crash of either process loses nothing: what is in
the journal ships later.

The pipes, one line or byte at a time:

- stdin: ``w`` (events were added), ``c<seconds>\\n`` (ship what you can within
  that many seconds, then exit), end of file (the engine is gone: stop now).

It dies with the engine (Linux: ``PR_SET_PDEATHSIG``): a ``kill -9`` of the engine is
one crash of the pair, not a shipper left running beside the engine's next start.
- stdout: ``shipped <n> 1`` after a batch is in the database and out of the
  journal (``shipped <n> 0``: in the database, but the journal could not forget
  it), ``failed <n> <error>`` after an attempt that failed (the engine counts and
  logs it), ``journal <error>`` when the journal cannot be read or cleared.

Run by RecordWriter (shipper_process.py) as ``python -m warmline.records.shipper JOURNAL
URL_VARIABLE RETRY ENGINE_PID`` with the database URL in the environment.
"""

from __future__ import annotations

import os
import select
import sqlite3
import sys
import time
from pathlib import Path
from typing import TextIO

from warmline.records.child import die_with, first_line
from warmline.records.journal import Journal
from warmline.records.store import connect, insert_events

BATCH = 500
GATHER_SECONDS = 0.05  # after a short batch: events reach the database within ~50 ms
IDLE_CHECK_SECONDS = 1.0  # a missed wake-up delays an event by at most this


class Control:
    """What the engine asked for on stdin: wake-ups, and when to stop."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.deadline: float | None = None  # set once closing: stop after this time
        self._text = b""

    @property
    def closing(self) -> bool:
        return self.deadline is not None

    def wait(self, seconds: float) -> None:
        """Sleep until the engine writes (or ``seconds`` pass), then read what it wrote."""
        readable, _, _ = select.select([self.fd], [], [], seconds)
        if readable:
            self._read()

    def pause(self, seconds: float) -> None:
        """Wait ``seconds`` whatever wake-ups arrive (a database that is down is not tried
        again at the rate events come in); only a request to stop ends it early."""
        end = time.monotonic() + seconds
        while not self.closing and (left := end - time.monotonic()) > 0:
            self.wait(left)

    def _read(self) -> None:
        data = os.read(self.fd, 4096)
        if not data:  # the engine is gone (where the kernel did not kill us with it)
            self._close_within(0.0)
            return
        self._text = (self._text + data)[-64:]
        start = self._text.rfind(b"c")
        if start != -1 and b"\n" in self._text[start:]:
            seconds = self._text[start + 1:].split(b"\n", 1)[0]
            try:
                self._close_within(float(seconds))
            except ValueError:
                self._close_within(0.0)

    def _close_within(self, seconds: float) -> None:
        if self.deadline is None:
            self.deadline = time.monotonic() + seconds


def ship(journal: Journal, url: str, retry_seconds: float, control: Control,
         out: TextIO) -> None:
    """Ship until asked to stop: each batch in the database, then out of the journal."""
    engine = None
    while True:
        try:
            batch = journal.oldest(BATCH)
        except sqlite3.Error as error:
            _say(out, f"journal {error}")
            batch = []
        if not batch:
            if control.closing:
                break
            control.wait(IDLE_CHECK_SECONDS)
            continue
        try:
            if engine is None:
                engine = connect(url)
            insert_events(engine, batch)
        except Exception as error:  # any failure (a missing driver too): report and retry
            _say(out, f"failed {len(batch)} {first_line(error)}")
            if control.closing:
                break  # the rest ships at the next start
            control.pause(retry_seconds)
            continue
        removed = 1
        try:
            journal.remove(batch[0].seq, batch[-1].seq)
        except sqlite3.Error as error:  # shipped again later, skipped as stored
            _say(out, f"journal {error}")
            removed = 0
        _say(out, f"shipped {len(batch)} {removed}")
        if control.deadline is not None and time.monotonic() > control.deadline:
            break
        if len(batch) < BATCH and not control.closing:
            time.sleep(GATHER_SECONDS)  # let the next batch fill rather than ship by tens
        control.wait(0)  # take in what arrived meanwhile
    if engine is not None:
        engine.dispose()


def _say(out: TextIO, line: str) -> None:
    try:
        out.write(line.replace("\n", " ") + "\n")
        out.flush()
    except BrokenPipeError:  # the engine is gone: what is left ships at its next start
        os._exit(0)


def main(argv: list[str]) -> int:
    if len(argv) != 4 or not os.environ.get(argv[1]):
        print("usage: python -m warmline.records.shipper JOURNAL URL_VARIABLE RETRY_SECONDS "
              "ENGINE_PID (the database URL in the environment variable URL_VARIABLE)",
              file=sys.stderr)
        return 2
    die_with(int(argv[3]))
    journal = Journal(Path(argv[0]), owner=False)  # the engine takes the appends
    try:
        ship(journal, os.environ[argv[1]], float(argv[2]), Control(sys.stdin.fileno()),
             sys.stdout)
    finally:
        journal.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
