"""A call recording: a stereo WAV, the caller on the left, what the caller hears on the right.

Both channels come from one leg's :class:`~warmline.media.plane.AudioTap`
(the caller's leg carries the whole conversation: what the caller says and
whatever the caller is sent, the AI, hold audio, the human or a mix). Packets
arrive when the network delivers them, so each channel's audio waits in a
short queue, and a clock of its own (a tick every 20 ms) takes one frame from
each queue at once: a channel with nothing queued gets silence for that
frame, so the two stay in step with each other and with the wall clock
(a gap in the caller's RTP is a gap in the file, not a shift).

Paused (card numbers, PCI DSS), a tick writes silence to both channels and
throws away what was queued, so the pause holds from the next frame on and
the file's timeline stays true.

Nothing on the event loop touches the disk: ticks fill a chunk in memory
(a second of audio), and full chunks go to one writer thread shared by every
recording. Memory is bounded on both sides: a queue longer than
:data:`MAX_QUEUED_FRAMES` loses its oldest audio, and a recording with more
than :data:`MAX_PENDING_CHUNKS` chunks waiting for a slow disk drops the new
ones, counted in :attr:`StereoRecorder.lost_seconds`.
"""

from __future__ import annotations

import asyncio
import os
import threading
import wave
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

import numpy as np

from warmline.media.player import Samples
from warmline.media.relay_leg import Pacer

RATE = 8000  # the relay bridges and decodes at 8 kHz (codecs.py), so the file is 8 kHz too
FRAME = RATE // 50  # samples in 20 ms
FRAME_BYTES = FRAME * 2
MAX_QUEUED_FRAMES = 25  # half a second of one channel waiting for the next tick
CHUNK_FRAMES = 50  # a second of stereo audio per write
MAX_PENDING_CHUNKS = 32  # seconds of audio waiting for the disk before new ones are dropped
_SILENT_FRAME = bytes(FRAME_BYTES)

# One writer thread for every recording: ordered writes, and a stalled disk costs one
# thread, not one per call.
_WRITER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="warmline-recorder")


class RecorderState(StrEnum):
    RECORDING = "recording"
    PAUSED = "paused"
    STOPPED = "stopped"


class _WavFile:
    """The file, written only on the writer thread. Created 0600: it holds personal data."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self._raw: BinaryIO = os.fdopen(descriptor, "wb")
        self._wav = wave.open(self._raw, "wb")  # noqa: SIM115 - closed in close()
        self._wav.setnchannels(2)
        self._wav.setsampwidth(2)
        self._wav.setframerate(RATE)

    def write(self, chunk: bytes) -> None:
        self._wav.writeframesraw(chunk)

    def close(self) -> None:
        self._wav.close()  # patches the header's lengths
        self._raw.close()


class StereoRecorder:
    """One recording; an :class:`~warmline.media.plane.AudioTap` for the caller's leg.

    Driven by :meth:`start` (a 20 ms pacer on the running loop) or, in tests,
    by calling :meth:`tick` directly. :meth:`stop` returns a future that
    resolves once the file is complete on disk.
    """

    def __init__(self, path: Path, writer: ThreadPoolExecutor | None = None) -> None:
        self.path = path
        self.state = RecorderState.RECORDING
        self.frames_ticked = 0  # per channel, silence included: the file's timeline
        self.frames_written = 0  # of those, handed to the writer (the rest is buffered)
        self.frames_lost = 0  # dropped because the disk fell behind
        self._writer = writer or _WRITER
        self._queues = (bytearray(), bytearray())  # caller, other side
        self._chunk = bytearray()
        self._chunk_frames = 0
        self._pending = 0
        self._lock = threading.Lock()  # _pending is decremented on the writer thread
        self._pacer: Pacer | None = None
        self._file: Future[_WavFile] = self._writer.submit(_WavFile, path)
        self.on_failure: Callable[[BaseException], None] | None = None

    # -- the tap -------------------------------------------------------------------
    def received(self, frame: Samples) -> None:
        """The caller's audio: the left channel."""
        self._queue(0, frame)

    def sent(self, frame: Samples) -> None:
        """What the caller hears: the right channel."""
        self._queue(1, frame)

    def _queue(self, channel: int, frame: Samples) -> None:
        if self.state is not RecorderState.RECORDING:
            return
        queue = self._queues[channel]
        queue += frame.astype("<i2", copy=False).tobytes()
        excess = len(queue) - MAX_QUEUED_FRAMES * FRAME_BYTES
        if excess > 0:
            del queue[:excess]  # a sender faster than our clock: its oldest audio goes

    # -- control -------------------------------------------------------------------
    @property
    def seconds(self) -> float:
        """How far the recording has come (where a pause begins in the file)."""
        return self.frames_ticked / RATE

    @property
    def lost_seconds(self) -> float:
        return self.frames_lost / RATE

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Tick every 20 ms on ``loop`` until :meth:`stop`."""
        self._pacer = Pacer(loop, self.tick)
        self._pacer.start()

    def pause(self) -> None:
        """Silence in both channels from the next frame on."""
        if self.state is RecorderState.RECORDING:
            self.state = RecorderState.PAUSED

    def resume(self) -> None:
        if self.state is RecorderState.PAUSED:
            self.state = RecorderState.RECORDING

    def tick(self) -> None:
        """20 ms more of the file: one frame from each channel, or silence."""
        if self.state is RecorderState.STOPPED:
            return
        left, right = (self._take(queue) for queue in self._queues)
        if self.state is RecorderState.PAUSED:
            left = right = _SILENT_FRAME
        stereo = np.empty(FRAME * 2, dtype="<i2")
        stereo[0::2] = np.frombuffer(left, dtype="<i2")
        stereo[1::2] = np.frombuffer(right, dtype="<i2")
        self._chunk += stereo.tobytes()
        self._chunk_frames += 1
        self.frames_ticked += FRAME
        if self._chunk_frames >= CHUNK_FRAMES:
            self._flush()

    def stop(self) -> Future[None]:
        """Stop ticking, write what is buffered and close the file (on the writer thread)."""
        if self._pacer is not None:
            self._pacer.stop()
        if self.state is not RecorderState.STOPPED:
            self._flush()
            self.state = RecorderState.STOPPED
        return self._writer.submit(self._close)

    # -- inside --------------------------------------------------------------------
    @staticmethod
    def _take(queue: bytearray) -> bytes:
        frame = bytes(queue[:FRAME_BYTES])
        del queue[:FRAME_BYTES]
        return frame.ljust(FRAME_BYTES, b"\0")  # nothing (or too little) came: silence

    def _flush(self) -> None:
        chunk, frames = bytes(self._chunk), self._chunk_frames * FRAME
        self._chunk.clear()
        self._chunk_frames = 0
        if not frames:
            return
        with self._lock:
            if self._pending >= MAX_PENDING_CHUNKS:
                self.frames_lost += frames
                return
            self._pending += 1
        self.frames_written += frames
        self._writer.submit(self._write, chunk)

    def _write(self, chunk: bytes) -> None:
        try:
            self._file.result().write(chunk)
        except Exception as error:  # a full disk: said once, the call goes on
            self._failed(error)
        finally:
            with self._lock:
                self._pending -= 1

    def _close(self) -> None:
        try:
            self._file.result().close()
        except Exception as error:
            self._failed(error)

    def _failed(self, error: BaseException) -> None:
        callback, self.on_failure = self.on_failure, None
        if callback is not None:
            callback(error)
