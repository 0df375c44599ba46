"""The journal's intake: an append-only file that takes each event in one write().

Why: committing every event to SQLite (six fcntl locks and two or three pwrites
a transaction, ~30 us here) was most of what a record cost the event loop. A
write() hands the event to the kernel just the same, so no crash of the process
can lose it, for the price of one system call; the journal's fsync thread moves
the intake into the SQLite table every FLUSH_SECONDS, many events a transaction
(journal.py ``settle``).

The file holds one JSON array an event, a line each. A line torn by a power cut
is skipped when read (the write that returned is the one that counts). A crash
between the journal's commit of a moved file and its unlink moves it again at the
next start: the databases store each uid once (store.py ``insert_events``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

log = logging.getLogger("warmline.records")
Row = tuple[str, float, str, str | None, str, str]  # an Entry's values


class Intake:
    """``journal.intake``: ``append`` adds (one thread at a time, or under the caller's
    lock); ``rotate`` renames it ``journal.settling`` for the journal to move."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.settling = path.with_suffix(".settling")
        self.count = 0  # events in the open file
        self._fd: int | None = None
        self._size = 0  # of the open file: where a failed write is cut back to
        self._torn = False  # a failed write could not be cut back: start on a new line
        self._lock = threading.Lock()  # the descriptor, between append and rotate

    def append(self, rows: list[Row]) -> None:
        """One write() of ``rows`` (raises OSError, leaving the file as it was)."""
        data = "".join(json.dumps(row) + "\n" for row in rows).encode()  # the C encoder
        with self._lock:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND
                                   | os.O_CLOEXEC, 0o600)
                self._size = os.fstat(self._fd).st_size
            if self._torn:  # the torn bytes end here, as a line of their own (skipped)
                data = b"\n" + data
            try:
                _write_all(self._fd, data)
            except OSError:
                self._cut_back(self._fd)
                raise
            self._torn = False
            self._size += len(data)
            self.count += len(rows)

    def _cut_back(self, fd: int) -> None:
        """After a failed write: no torn line for the next write to extend."""
        try:
            os.ftruncate(fd, self._size)
        except OSError:
            self._size = os.fstat(fd).st_size
            self._torn = True

    def rotate(self) -> int:
        """Close the file and rename it ``journal.settling`` (which must not exist);
        returns how many events this process appended to it."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
                self._torn = False  # the next file starts clean
            if self.path.exists():
                os.replace(self.path, self.settling)
            moved, self.count = self.count, 0
            return moved

    def sync(self) -> None:
        """fsync the open file (the power-loss guarantee while it cannot be moved)."""
        with self._lock:
            if self._fd is not None:
                os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def read(path: Path) -> list[Row]:
    """The whole event lines of an intake file (a torn line: reported and skipped)."""
    rows: list[Row] = []
    for number, line in enumerate(path.read_bytes().split(b"\n"), start=1):
        if not line:
            continue
        try:
            row = json.loads(line)
            uid, at, call_id, handoff_id, kind, data = row
            rows.append((_text(uid), float(at), _text(call_id),
                         None if handoff_id is None else _text(handoff_id), _text(kind),
                         _text(data)))
        except (ValueError, TypeError):
            log.error("records: %s line %d is not a whole event, skipped", path, number)
    return rows


def _text(value: object) -> str:
    """``value`` as text SQLite can take: a lone surrogate (JSON carries it, UTF-8 cannot)
    replaced, not left to fail the whole move at every try."""
    text = str(value)
    try:
        text.encode()
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode()
    return text


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
