"""The engine's handle on the SIP trace keeper process (trace_keeper.py).

Batches go out in order through a writer thread (a write to a full pipe blocks,
and must not block the event loop); the keeper's reports come back through a
reader thread, blocked in read() and so off the GIL, and resolve each batch's
future on the loop, in the order the batches were sent.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import pickle
import queue
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

EXIT_SECONDS = 10.0  # for the keeper to store what it was sent, once asked to stop


class KeeperGone(Exception):
    """The keeper exited before it reported on the batch (the caller stores it itself)."""


class NotStored(Exception):
    """The keeper could not store the batch (its one-line reason)."""


class KeeperProcess:
    """One keeper. :meth:`send` from the loop; :meth:`close` waits for every report."""

    def __init__(self, folder: Path, clean_name: str) -> None:
        self._loop = asyncio.get_running_loop()
        self._process = subprocess.Popen(
            [sys.executable, "-m", "warmline.records.trace_keeper", str(folder), clean_name,
             str(os.getpid())], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self.alive = True
        self._waiting: collections.deque[asyncio.Future[int]] = collections.deque()
        self._outbox: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write, daemon=True,
                                        name="warmline-traces-out")
        self._reader = threading.Thread(target=self._read, daemon=True,
                                        name="warmline-traces-in")
        self._writer.start()
        self._reader.start()

    @property
    def pid(self) -> int:
        return self._process.pid

    def send(self, raw: Any) -> asyncio.Future[int]:
        """Queue a batch; the future gets how many were stored, or NotStored, or KeeperGone."""
        future: asyncio.Future[int] = self._loop.create_future()
        if not self.alive:
            future.set_exception(KeeperGone("the SIP trace keeper has exited"))
            return future
        self._waiting.append(future)
        body = pickle.dumps(raw, protocol=pickle.HIGHEST_PROTOCOL)
        self._outbox.put(len(body).to_bytes(4, "big") + body)
        return future

    async def close(self) -> None:
        """The keeper stores what it was sent and exits (killed past EXIT_SECONDS); every
        future is resolved when this returns."""
        self._outbox.put(None)
        await self._loop.run_in_executor(None, self._wait)
        await asyncio.sleep(0)  # the reports the reader queued on the loop

    def _wait(self) -> None:
        try:
            self._process.wait(EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._writer.join()
        self._reader.join()

    # -- the two threads ---------------------------------------------------------------
    def _write(self) -> None:
        pipe = self._process.stdin
        assert pipe is not None
        while (chunk := self._outbox.get()) is not None:
            try:
                _write_all(pipe, chunk)
            except OSError:  # the keeper died: the reader tells the loop
                break
        with contextlib.suppress(OSError):
            pipe.close()

    def _read(self) -> None:
        pipe = self._process.stdout
        assert pipe is not None
        with contextlib.suppress(RuntimeError):  # the loop closed already: nobody asks
            for line in pipe:
                self._loop.call_soon_threadsafe(self._report, line.decode("utf-8", "replace"))
            self._process.wait()
            self._loop.call_soon_threadsafe(self._gone)

    def stop(self) -> None:
        """Let the writer thread end (the keeper died: nothing more goes to it)."""
        self._outbox.put(None)

    # -- on the loop -------------------------------------------------------------------
    def _report(self, line: str) -> None:
        if not self._waiting:
            return
        future = self._waiting.popleft()
        kind, _, rest = line.strip().partition(" ")
        if kind == "stored" and rest.isdigit():
            future.set_result(int(rest))
        else:
            future.set_exception(NotStored(rest.partition(" ")[2] or line.strip()))

    def _gone(self) -> None:
        self.alive = False
        while self._waiting:
            self._waiting.popleft().set_exception(
                KeeperGone(f"the SIP trace keeper exited ({self._process.returncode})"))


def _write_all(pipe: Any, chunk: bytes) -> None:
    """A raw pipe may take part of a write (a signal landing mid-way): the rest follows, so
    the keeper never loses the framing."""
    view = memoryview(chunk)
    while view:
        written = pipe.write(view)
        view = view[written or 0:]
