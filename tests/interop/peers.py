"""Real peers for interop tests: free ports, a bounded sipp, an in-process warmline."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

from warmline.sip.session import SessionEvent
from warmline.sip.useragent import UserAgent, UserAgentConfig
from warmline.transport.listen import ListenSpec
from warmline.transport.shell import SipShell

SCENARIOS = Path(__file__).parent / "scenarios"
SIPP = shutil.which("sipp") or "sipp"


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = udp.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return int(port)
    raise RuntimeError("no free port pair found")


@dataclass
class SippResult:
    returncode: int
    output: str

    def stat(self, name: str) -> int:
        """A cumulative counter from sipp's final statistics screen."""
        matches = re.findall(rf"{re.escape(name)}\s*\|\s*\d+\s*\|\s*(\d+)", self.output)
        return int(matches[-1]) if matches else -1


async def run_sipp(args: list[str], workdir: Path, timeout: float = 30.0) -> SippResult:
    """Run sipp to completion, bounded in time, stopped by PID if it overruns."""
    command = [SIPP, *args, "-nostdin", "-cp", str(free_port()), "-timeout", f"{int(timeout)}s",
               "-timeout_error"]
    process = await asyncio.create_subprocess_exec(
        *command, cwd=workdir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        stdout, _ = await asyncio.wait_for(process.communicate(), timeout + 10)
    except TimeoutError:
        process.kill()
        stdout, _ = await process.communicate()
    output = stdout.decode("utf-8", "replace")
    for log in workdir.glob("*_errors.log"):
        output += "\n" + log.read_text(errors="replace")
    return SippResult(process.returncode if process.returncode is not None else -9, output)


def render_scenario(name: str, workdir: Path, **markers: str) -> Path:
    text = (SCENARIOS / name).read_text()
    for key, value in markers.items():
        text = text.replace(f"@@{key.upper()}@@", value)
    assert "@@" not in text, "unrendered marker left in scenario"
    path = workdir / name
    path.write_text(text)
    return path


@dataclass
class Engine:
    """An in-process warmline core + shell with a test application."""

    shell: SipShell
    spec: ListenSpec
    events: list[tuple[float, SessionEvent]] = field(default_factory=list)

    @property
    def ua(self) -> UserAgent:
        return self.shell.ua


@contextlib.asynccontextmanager
async def engine(transport: str, on_event: Callable[[Engine, SessionEvent], None] | None = None,
                 config: UserAgentConfig | None = None,
                 tls_server: ssl.SSLContext | None = None,
                 tls_client: ssl.SSLContext | None = None) -> AsyncIterator[Engine]:
    shell = SipShell(UserAgent(config), tls_server=tls_server, tls_client=tls_client)
    spec = await shell.listen(ListenSpec(transport, "127.0.0.1", free_port()))
    running = Engine(shell, spec)

    def record(event: SessionEvent) -> None:
        running.events.append((shell.now(), event))
        if on_event is not None:
            on_event(running, event)

    shell.on_event = record
    try:
        yield running
    finally:
        await shell.close()


@dataclass
class ServeProcess:
    process: subprocess.Popen[str]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def start_serve(args: list[str], workdir: Path) -> ServeProcess:
    """Start `warmline serve` as a real process (stopped by PID in stop_serve)."""
    log_path = workdir / "serve.log"
    handle = log_path.open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "warmline", "serve", *args],
        stdout=handle, stderr=subprocess.STDOUT, text=True, cwd=workdir,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return ServeProcess(process, log_path)


def wait_for_log(server: ServeProcess, needle: str, timeout: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in server.log():
            return
        if server.process.poll() is not None:
            raise AssertionError(f"warmline exited early:\n{server.log()}")
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not logged within {timeout}s:\n{server.log()}")


def stop_serve(server: ServeProcess, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
    if server.process.poll() is None:
        server.process.send_signal(sig)
        try:
            server.process.wait(timeout)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    return server.process.returncode


def self_signed_certificate(workdir: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 made with the openssl command."""
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60)
    return cert, key
