"""Storing ended calls' SIP traces in ``traces.sqlite``, off the event loop, in batches.

Each call's messages are redacted and stored at its end: a few hundred
microseconds of Python a call. On the loop that is time taken from the calls;
on a thread of the same process it still holds the GIL, and at 300 and more
calls a second the loop then waits for it at every system call (measured: the
blind-transfer bench failed at 380 cycles/s with the redaction on a thread and
passed without it). So traces gather on the loop for ``BATCH_WAIT`` and go
as one batch: to a thread while batches are small (a quiet node starts no
process), and from the first batch of ``PROCESS_BATCH`` traces on to the
keeper, a process of its own (trace_keeper.py), which redacts and stores them
beside the engine's GIL. If it dies or cannot start, the thread takes over,
the batches it had not stored included.
Until a trace is stored its messages are kept here, so the API shows it
without a gap (:attr:`TraceWriter.writing`). Old traces are deleted by the
thread, after ``[trace] keep_days``.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from warmline.records.child import function_name
from warmline.records.keeper_process import KeeperGone, KeeperProcess, NotStored
from warmline.records.retention import DAY, sweep_old_files
from warmline.records.trace import TracedMessage
from warmline.records.trace_store import TraceRow, TraceStore, trace_row

log = logging.getLogger("warmline.records")
BATCH_WAIT = 0.1  # seconds traces gather on the loop before they go as one batch
PROCESS_BATCH = 20  # a batch this big (a busy node): batches go to a process from then on
MAX_WAITING = 20_000  # traces not stored yet at most; past it a call's trace is dropped
MAX_WAITING_BYTES = 64 * 1024 * 1024  # ... and their messages' characters at most

# a trace as it crosses to the writer: call id, handoff ids, messages as plain tuples
RawMessage = tuple[float, str, str, str, int, str]
RawTrace = tuple[str, tuple[str, ...], Sequence[RawMessage]]


@dataclass(frozen=True)
class _Waiting:
    call_id: str
    handoff_ids: tuple[str, ...]
    messages: list[TracedMessage]
    written: Callable[[str], None]

    def raw(self) -> RawTrace:
        # plain tuples: a named tuple pickles through a Python-level __getnewargs__ (twice
        # this copy's cost on the loop, and two and a half times in the keeper)
        return self.call_id, self.handoff_ids, [
            (m.at, m.direction, m.transport, m.host, m.port, m.text) for m in self.messages]


class TraceWriter:
    """Stores each call's trace off the loop, each message through ``clean``."""

    def __init__(self, folder: Path, clean: Callable[[str], str]) -> None:
        self.folder = folder
        self.clean = clean
        self.writing: dict[str, list[TracedMessage]] = {}  # call id -> its messages, raw
        self.stored = 0  # traces stored since the start
        self.dropped = 0  # traces not kept: the writer that far behind
        self.waiting_bytes = 0  # characters of the messages in ``writing``
        self._gathering: list[_Waiting] = []
        self._send_due: asyncio.TimerHandle | None = None
        self._sent: set[asyncio.Future[int]] = set()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="warmline-traces")
        self.keeper: KeeperProcess | None = None
        self._keeper_given_up = False  # it died or could not start: the thread from then on
        self._closing = False

    def write(self, call_id: str, handoff_ids: list[str], messages: list[TracedMessage],
              written: Callable[[str], None]) -> None:
        """Queue the call's trace; ``written(call_id)`` is called on the loop once it is
        stored (or could not be: that is logged)."""
        size = _characters(messages)
        if len(self.writing) >= MAX_WAITING or self.waiting_bytes + size > MAX_WAITING_BYTES:
            self.dropped += 1  # the disk stalled: memory stays bounded
            if self.dropped % 1000 == 1:
                log.warning("SIP traces dropped: %d waiting already (%d dropped so far)",
                            len(self.writing), self.dropped)
            written(call_id)
            return
        if call_id in self.writing:  # a comeback call's earlier trace, still waiting
            self.waiting_bytes -= _characters(self.writing[call_id])
        self.writing[call_id] = messages
        self.waiting_bytes += size
        self._gathering.append(_Waiting(call_id, tuple(handoff_ids), messages, written))
        if self._send_due is None:
            self._send_due = asyncio.get_running_loop().call_later(BATCH_WAIT, self._send)

    def sweep(self, keep_days: float) -> None:
        """Delete the traces stored more than ``keep_days`` ago (on the writer's thread)."""
        self._thread.submit(forget_old, self.folder, keep_days)

    async def close(self) -> None:
        """Every trace queued is stored (or its failure logged) when this returns."""
        self._closing = True
        if self._send_due is not None:
            self._send_due.cancel()
            self._send()
        if self.keeper is not None:
            await self.keeper.close()  # it stores what it was sent, then exits
        while self._sent:
            await asyncio.wait(list(self._sent))
            await asyncio.sleep(0)  # the ``written`` callbacks, and any batch sent again
        loop = asyncio.get_running_loop()
        self._thread.submit(close_store, self.folder)
        await loop.run_in_executor(None, self._thread.shutdown)

    def _send(self) -> None:
        self._send_due = None
        batch, self._gathering = self._gathering, []
        if not batch:
            return
        keeper = self._keeper_for(len(batch))
        if keeper is not None:
            self._follow(batch, keeper.send([item.raw() for item in batch]))
        else:
            self._in_thread(batch)

    def _in_thread(self, batch: list[_Waiting]) -> None:
        self._follow(batch, asyncio.wrap_future(self._thread.submit(
            store_batch, self.folder, [item.raw() for item in batch], self.clean)))

    def _follow(self, batch: list[_Waiting], future: asyncio.Future[int]) -> None:
        self._sent.add(future)
        future.add_done_callback(lambda done: self._stored(batch, done))

    def _keeper_for(self, size: int) -> KeeperProcess | None:
        keeper = self.keeper
        if keeper is not None or size < PROCESS_BATCH or self._keeper_given_up \
                or self._closing:
            return keeper
        name = function_name(self.clean)
        try:
            if name is None:
                raise ValueError(f"{self.clean!r} cannot be found by name")
            self.keeper = KeeperProcess(self.folder, name)
        except (OSError, ValueError) as error:
            log.info("SIP traces stored by a thread (no keeper process: %s)", error)
            self._keeper_given_up = True
        return self.keeper

    def _stored(self, batch: list[_Waiting], done: asyncio.Future[int]) -> None:
        self._sent.discard(done)
        error = None if done.cancelled() else done.exception()
        if isinstance(error, KeeperGone):  # this batch too: stored here, nothing lost
            if self.keeper is not None and not self._closing:
                log.warning("%s: SIP traces stored by a thread from now on", error)
            if self.keeper is not None:
                self.keeper.stop()
            self.keeper, self._keeper_given_up = None, True
            self._in_thread(batch)
            return
        if isinstance(error, NotStored | sqlite3.Error | OSError):  # a full disk, a broken
            log.warning("%d SIP trace(s) not stored: %s", len(batch), error)  # file: calls go on
        elif error is not None:  # a bug: with its traceback
            log.error("%d SIP trace(s) not stored", len(batch), exc_info=error)
        elif not done.cancelled():
            self.stored += done.result()
        for item in batch:
            if self.writing.get(item.call_id) is item.messages:
                del self.writing[item.call_id]
                self.waiting_bytes -= _characters(item.messages)
            item.written(item.call_id)


# -- run by the writer's thread or process --------------------------------------------
_STORES: dict[Path, TraceStore] = {}  # one connection per folder in this thread/process


def store_batch(folder: Path, raw: list[RawTrace], clean: Callable[[str], str]) -> int:
    """Redact and store ``raw`` traces in one transaction; how many were stored. A call
    id that is not one of ours is logged and skipped (sqlite3.Error: none stored)."""
    rows: list[TraceRow] = []
    for call_id, handoff_ids, messages in raw:
        try:
            rows.append(trace_row(call_id, handoff_ids,
                                  [TracedMessage(*message) for message in messages], clean))
        except ValueError as error:
            log.warning("call %s: SIP trace not stored: %s", call_id, error)
    _store_of(folder).add(rows)
    return len(rows)


def forget_old(folder: Path, keep_days: float) -> None:
    """Delete the traces stored before ``keep_days`` ago, and the first version's trace
    files (``traces/*.jsonl``) last written before then."""
    try:
        deleted = _store_of(folder).forget_before(time.time() - keep_days * DAY)
        deleted += len(sweep_old_files(folder / "traces", "*.jsonl", keep_days))
    except (OSError, sqlite3.Error) as error:
        log.warning("old SIP traces not deleted: %s", error)
        return
    if deleted:
        log.info("%d SIP trace(s) older than %g day(s) deleted", deleted, keep_days)


def _store_of(folder: Path) -> TraceStore:
    store = _STORES.get(folder)
    if store is None:
        store = _STORES[folder] = TraceStore(folder)
    return store


def close_store(folder: Path) -> None:
    store = _STORES.pop(folder, None)
    if store is not None:
        store.close()


def _characters(messages: list[TracedMessage]) -> int:
    return sum(len(message.text) for message in messages)
