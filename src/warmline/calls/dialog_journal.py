"""The dialogs this process owns, on disk, so that the next start can end what a crash left.

A line per confirmed dialog (caller legs, humans, consults), appended when the
dialog is confirmed, and a line when it ends; after ``kill -9`` the dialogs
whose last line says "up" are exactly those whose far ends still think the
call is up. At start they are read, each gets a BYE with a Reason
(sip/dialog_memo.py), and a line goes in when its BYE is answered or times out.

An append-only file written with one write() a line: what a process crash cannot
lose (the OS has the page) is all this needs, and a call pays a few
microseconds for it (an SQLite commit a dialog cost the event loop 3% of its
time at 300 transfer cycles a second). The file is rewritten with only the live
dialogs (a temporary file renamed over it) at start, fsynced there, and whenever
it holds four times more lines than live dialogs, not fsynced then (an fsync on
the event loop can stall it for as long as the disk likes; a rename over a file
is ordered after its data on ext4, and a power cut may lose the last lines
anyway: session timers end those calls). A torn line is skipped, and the next
line starts on a line of its own. A journal that cannot be written is logged
and counted; the calls go on. One that cannot be read is set aside, never
overwritten.

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
        self.failures = 0  # lines not written
        self.rewrite_failures = 0
        self._fd = -1
        self._torn = False  # the last write stopped part-way: the next starts a new line
        self._lines = 0  # in the file now
        self._rewrite_at = COMPACT_AT_LEAST
        # the first layout's rows first: the log, newer, says which of them ended since
        self._live: dict[str, str] = _read_first_layout(path)  # key -> the memo's JSON
        self._replay()
        self._earlier = set(self._live)  # what this run found: left_over() is only these
        if self._rewrite(durable=True):
            _remove_first_layout(path)  # only once its rows are in the new file

    def left_over(self) -> list[DialogMemo]:
        """The dialogs a previous run left up and nobody has ended since (not those this
        run confirmed); entries that do not read are dropped."""
        memos, broken = [], []
        for key in sorted(self._earlier & self._live.keys()):
            try:
                memos.append(DialogMemo.from_json(self._live[key]))
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
        if self._torn:
            line = "\n" + line
        data = memoryview(line.encode())
        try:
            if self._fd < 0:
                raise OSError("the journal is not open")
            while data:
                self._torn = True  # until the whole line is in
                data = data[os.write(self._fd, data):]
            self._torn = False
        except OSError as error:
            self.failures += 1
            self._log_failure("cannot write", self.failures, error)
            return
        self._lines += 1
        if self._lines >= max(self._rewrite_at, 4 * len(self._live)):
            self._rewrite(durable=False)

    def _replay(self) -> None:
        """The live dialogs as the file left them: a line cut short, or whose memo does
        not read, is skipped (an earlier good line for the dialog stands). A file that
        cannot be read is set aside, never overwritten by the rewrite that follows."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return
        except OSError as error:
            aside = self.path.with_suffix(".log.unread")
            log.error("dialog journal %s: cannot read it (%s); kept as %s, and the dialogs "
                      "it names are not ended", self.path, error, aside.name)
            self.path.rename(aside)  # if this fails too, serve stops here, saying why
            return
        for line in text.splitlines():
            key_text, _, memo = line[1:].partition("\t")
            try:
                key = json.loads(key_text)
                if line[0] == _UP:
                    DialogMemo.from_json(memo)
            except (ValueError, SipParseError):
                continue
            if not isinstance(key, str):
                continue
            if line[0] == _UP:
                self._live[key] = memo
            elif line[0] == _DOWN:
                self._live.pop(key, None)

    def _rewrite(self, durable: bool) -> bool:
        """Only the live dialogs, atomically: a crash leaves the old file or the new one.
        The file names callers (their URIs): readable by this user only. A rewrite that
        fails is tried again only once the file has doubled."""
        temporary = self.path.with_suffix(".log.tmp")
        lines = "".join(f"{_UP}{json.dumps(key)}\t{memo}\n" for key, memo in self._live.items())
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                file.write(lines)
                file.flush()
                if durable:
                    os.fsync(file.fileno())
            os.replace(temporary, self.path)
            self.close()
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        except OSError as error:
            self.rewrite_failures += 1
            self._log_failure("cannot rewrite", self.rewrite_failures, error)
            with contextlib.suppress(OSError):
                temporary.unlink(missing_ok=True)
            self._rewrite_at = 2 * max(self._lines, COMPACT_AT_LEAST)
            if self._fd < 0:  # keep appending to the old file if it is there
                with contextlib.suppress(OSError):
                    self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                                       | os.O_CLOEXEC, 0o600)
            return False
        self._torn = False
        self._lines = len(self._live)
        self._rewrite_at = COMPACT_AT_LEAST
        return True

    def _log_failure(self, what: str, count: int, error: OSError) -> None:
        if count in (1, 10, 100) or count % 1000 == 0:
            log.error("dialog journal %s: %s (%d failures): %s", self.path, what, count, error)


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
        try:
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        except OSError as error:
            log.error("dialog journal: cannot remove the old %s%s (%s); its rows are in "
                      "the new file, and the log says which ended", path, suffix, error)
