"""A real rtpengine for tests: userspace forwarding on loopback, bounded, stopped by PID."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.interop.peers import free_port, relay_block, stop_process


@dataclass
class Rtpengine:
    ng_port: int
    ports: range
    log: Path
    process: subprocess.Popen[bytes]

    @property
    def address(self) -> str:
        return f"udp:127.0.0.1:{self.ng_port}"


def _pong(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        try:
            sock.sendto(b"probe d7:command4:pinge", ("127.0.0.1", port))
            return b"pong" in sock.recv(1000)
        except OSError:
            return False


@contextlib.contextmanager
def rtpengine(workdir: Path, seconds: int = 60) -> Iterator[Rtpengine]:
    """rtpengine --table=-1 on 127.0.0.1 with a free ng port and its own port block."""
    ng_port, base = free_port(), relay_block(200)
    log_path = workdir / "rtpengine.log"
    log = log_path.open("wb")
    process = subprocess.Popen(
        ["timeout", str(seconds), "rtpengine", "--foreground", "--table=-1",
         "--interface=127.0.0.1", f"--listen-ng=127.0.0.1:{ng_port}",
         f"--port-min={base}", f"--port-max={base + 199}", "--log-stderr", "--log-level=6",
         "--delete-delay=0", "--num-threads=1"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not _pong(ng_port):
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError("rtpengine did not start: "
                                     + log_path.read_text(errors="replace")[-2000:])
            time.sleep(0.05)
        yield Rtpengine(ng_port, range(base, base + 200), log_path, process)
    finally:
        stop_process(process, timeout=5)
        log.close()
