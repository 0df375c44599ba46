"""A real redis-server for a test: a free loopback port, no persistence, bounded, stopped by PID.

Never the system Redis on 6379: each test starts its own (``--save '' --appendonly no``,
so nothing is written to disk), under ``timeout`` so it cannot outlive a crashed run.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.interop.peers import free_port, stop_process

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
LIFETIME = 180  # seconds a test's redis-server may live at most


class RedisPeer:
    """One redis-server on ``port``; ``stop`` and ``start`` again on the same port (an
    outage, or a restart that lost everything)."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            ["timeout", str(LIFETIME), REDIS_SERVER, "--port", str(self.port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir), "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if self._answers():
                return
            if self.process.poll() is not None:
                raise AssertionError(f"redis-server exited: {self.process.returncode}")
            time.sleep(0.02)
        raise AssertionError(f"redis-server on {self.port} did not answer within 5 s")

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=5)
            self.process = None

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[RedisPeer]:
    peer = RedisPeer(workdir / "redis")
    peer.start()
    try:
        yield peer
    finally:
        peer.stop()
