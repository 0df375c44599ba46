"""Writing each ended call's SIP trace to ``traces/`` on a thread of its own.

A trace file is created, written and closed once per call: a few hundred
microseconds of system calls (and the redaction of the messages) that would
otherwise sit on the event loop at every call's end. One worker thread does
them in order; the file system calls release the GIL, so at the highest call
rates the loop goes on meanwhile. Until a file is on disk its messages are
kept here, so the API shows the trace without a gap (:attr:`writing`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from warmline.records.trace import TracedMessage, write_trace

log = logging.getLogger("warmline.records")


class TraceWriter:
    """Writes ``traces/<call id>.jsonl`` off the loop, each message through ``clean``."""

    def __init__(self, folder: Path, clean: Callable[[str], str]) -> None:
        self.folder = folder
        self.clean = clean
        self.writing: dict[str, list[TracedMessage]] = {}  # call id -> its messages, raw
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="warmline-traces")

    def write(self, call_id: str, handoff_ids: list[str], messages: list[TracedMessage],
              written: Callable[[str], None]) -> None:
        """Queue the call's trace; ``written(call_id)`` is called on the loop once it is
        on disk (or could not be written: that is logged)."""
        loop = asyncio.get_running_loop()
        self.writing[call_id] = messages
        future = self._pool.submit(write_trace, self.folder, call_id, handoff_ids, messages,
                                   self.clean)

        def done(finished: Future[Path]) -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody asks any more
                loop.call_soon_threadsafe(self._done, call_id, finished, written)

        future.add_done_callback(done)

    def _done(self, call_id: str, finished: Future[Path],
              written: Callable[[str], None]) -> None:
        self.writing.pop(call_id, None)
        error = finished.exception()
        if isinstance(error, OSError):
            log.warning("call %s: SIP trace not written: %s", call_id, error)
        elif error is not None:  # a bug: with its traceback
            log.error("call %s: SIP trace not written", call_id, exc_info=error)
        written(call_id)

    async def close(self) -> None:
        """Every trace queued is on disk (or its failure logged) when this returns."""
        await asyncio.get_running_loop().run_in_executor(None, self._pool.shutdown)
        await asyncio.sleep(0)  # the last ``written`` callbacks
