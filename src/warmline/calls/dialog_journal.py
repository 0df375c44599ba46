"""The dialogs this process owns, on disk, so that the next start can end what a crash left.

A row per confirmed dialog (caller legs, humans, consults), written when the
dialog is confirmed and deleted when it ends; after ``kill -9`` the rows that
remain are exactly the dialogs whose far ends still think the call is up. At
start they are read, each gets a BYE with a Reason (sip/dialog_memo.py), and
a row goes when its BYE is answered or times out.

SQLite in WAL mode with ``synchronous=NORMAL``: a write is one page append, no
fsync, so a call pays microseconds for it; what a process crash cannot lose
(the OS has the page) is all this needs. A power cut may lose the last rows,
and session timers end those calls instead. A journal that cannot be written
is logged and counted; the calls go on.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from warmline.sip.dialog_memo import DialogMemo
from warmline.sip.errors import SipParseError

log = logging.getLogger("warmline.calls")


class DialogJournal:
    """Remember and forget dialogs by key; list what an earlier run left."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.failures = 0
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS dialogs (key TEXT PRIMARY KEY, memo TEXT)")

    def left_over(self) -> list[DialogMemo]:
        """The dialogs a previous run did not end; rows that do not read are dropped."""
        memos, broken = [], []
        for key, text in self._db.execute("SELECT key, memo FROM dialogs").fetchall():
            try:
                memos.append(DialogMemo.from_json(text))
            except SipParseError:
                broken.append(key)
        for key in broken:
            self.forget(key)
        return memos

    def remember(self, memo: DialogMemo) -> None:
        self._write("INSERT OR REPLACE INTO dialogs VALUES (?, ?)", (memo.key, memo.to_json()))

    def forget(self, key: str) -> None:
        self._write("DELETE FROM dialogs WHERE key = ?", (key,))

    def __len__(self) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM dialogs").fetchone()
        return int(row[0])

    def close(self) -> None:
        self._db.close()

    def _write(self, statement: str, values: tuple[str, ...]) -> None:
        try:
            self._db.execute(statement, values)
        except sqlite3.Error as error:
            self.failures += 1
            if self.failures in (1, 10, 100) or self.failures % 1000 == 0:
                log.error("dialog journal %s: cannot write (%d failures): %s", self.path,
                          self.failures, error)
