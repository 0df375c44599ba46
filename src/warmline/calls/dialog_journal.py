"""The dialogs this process owns, on disk, so that the next start can end what a crash left.

A line per confirmed dialog (caller legs, humans, consults), appended when the
dialog is confirmed, and a line when it ends; after ``kill -9`` the dialogs
whose last line says "up" are exactly those whose far ends still think the
call is up. At start they are read, each gets a BYE with a Reason
(sip/dialog_memo.py), and a line goes in when its BYE is answered or times out.

An append-only file written with one write() a line: what a process crash cannot
lose (the OS has the page) is all this needs, and a call pays a few
microseconds for it (an SQLite commit a dialog cost the event loop 3% of its
time at 300 transfer cycles a second). A power cut may lose the last lines, and
session timers end those calls. The file is rewritten with only the live
dialogs (to a temporary file, fsynced, renamed over) at start and whenever it
holds four times more lines than live dialogs. A torn last line is skipped. A
journal that cannot be written is logged and counted; the calls go on.

The first layout was an SQLite table at ``dialogs.db``: its rows are carried
over at start and the file removed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sqlite3
from pathlib import Path

from warmline.sip.dialog_memo import DialogMemo
from warmline.sip.errors import SipParseError

log = logging.getLogger("warmline.calls")

_UP, _DOWN = "+", "-"
COMPACT_AT_LEAST = 10_000  # lines before a rewrite is considered


class DialogJournal:
    """Remember and forget dialogs by key; list what an earlier run left.

    ``path`` names the first layout's SQLite file (``dialogs.db``); the journal
    itself is ``dialogs.log`` beside it.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path.with_suffix(".log")
        self.failures = 0
        self._live: dict[str, str] = {}  # key -> the memo's JSON, for the rewrites
        self._lines = 0  # in the file now
        self._replay()
        self._live.update(_read_first_layout(path))
        self._fd = -1
        if self._rewrite():
            _remove_first_layout(path)  # only once its rows are in the new file

    def left_over(self) -> list[DialogMemo]:
        """The dialogs a previous run did not end; entries that do not read are dropped."""
        memos, broken = [], []
        for key, text in list(self._live.items()):
            try:
                memos.append(DialogMemo.from_json(text))
            except SipParseError:
                broken.append(key)
        for key in broken:
            self.forget(key)
        return memos

    def remember(self, memo: DialogMemo) -> None:
        text = memo.to_json()
        self._live[memo.key] = text
        self._append(f"{_UP}{json.dumps(memo.key)}\t{text}\n")

    def forget(self, key: str) -> None:
        if self._live.pop(key, None) is not None:
            self._append(f"{_DOWN}{json.dumps(key)}\n")

    def __len__(self) -> int:
        return len(self._live)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _append(self, line: str) -> None:
        try:
            if self._fd < 0:
                raise OSError("the journal is not open")
            os.write(self._fd, line.encode())
        except OSError as error:
            self._failed(error)
            return
        self._lines += 1
        if self._lines >= max(COMPACT_AT_LEAST, 4 * len(self._live)):
            self._rewrite()

    def _replay(self) -> None:
        """The live dialogs as the file left them; a torn or unreadable line is skipped."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        except OSError as error:
            self._failed(error)
            return
        for line in text.splitlines():
            try:
                key_text, _, memo = line[1:].partition("\t")
                key = json.loads(key_text)
            except ValueError:
                continue
            if not isinstance(key, str):
                continue
            if line[0] == _UP and memo:
                self._live[key] = memo
            elif line[0] == _DOWN:
                self._live.pop(key, None)

    def _rewrite(self) -> bool:
        """Only the live dialogs, atomically: a crash leaves the old file or the new one.
        The file names callers (their URIs): readable by this user only."""
        temporary = self.path.with_suffix(".log.tmp")
        lines = "".join(f"{_UP}{json.dumps(key)}\t{memo}\n" for key, memo in self._live.items())
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(lines)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temporary, self.path)
            self.close()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError as error:
            self._failed(error)
            if self._fd < 0:  # keep appending to the old file if it is there
                with contextlib.suppress(OSError):
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                                       | os.O_CLOEXEC, 0o600)
            return False
        self._lines = len(self._live)
        return True

    def _failed(self, error: OSError) -> None:
        self.failures += 1
        if self.failures in (1, 10, 100) or self.failures % 1000 == 0:
            log.error("dialog journal %s: cannot write (%d failures): %s", self.path,
                      self.failures, error)


def _read_first_layout(path: Path) -> dict[str, str]:
    """The first layout's rows (an SQLite table at ``path``); one that does not read is
    renamed aside, not removed."""
    if not path.exists():
        return {}
    try:
        db = sqlite3.connect(path)
        try:
            return dict(db.execute("SELECT key, memo FROM dialogs").fetchall())
        finally:
            db.close()
    except sqlite3.Error as error:
        log.error("dialog journal %s: the old table does not read (%s); kept as %s.unread",
                  path, error, path.name)
        with contextlib.suppress(OSError):
            path.rename(f"{path}.unread")
        return {}


def _remove_first_layout(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        with contextlib.suppress(OSError):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
