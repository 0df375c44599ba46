"""Real peers for interop tests: free ports, a bounded sipp, an in-process warmline."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from warmline.sip.session import SessionEvent
from warmline.sip.useragent import UserAgent, UserAgentConfig
from warmline.transport.listen import ListenSpec, parse_listen
from warmline.transport.shell import SipShell

SCENARIOS = Path(__file__).parent / "scenarios"
SIPP = shutil.which("sipp") or "sipp"


# a second pytest beside the main one (scripts/test) starts its blocks elsewhere
_BLOCKS = itertools.count(int(os.environ.get("WARMLINE_TEST_BLOCKS_FROM", "0")) + os.getpid() % 40)


def relay_block(size: int = 60) -> int:
    """An even base port for a relay's PortRange, below the kernel's ephemeral range.

    Ports picked with free_port() (sipp, listeners) come from the ephemeral range,
    32768 and up, so a relay range taken from 12000-32000 can never be handed out
    to them between their pick and their bind.
    """
    if size > 200:
        raise ValueError("relay_block: at most 200 ports")
    for _ in range(100):
        base = 12000 + (next(_BLOCKS) % 100) * 200
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            try:
                probe.bind(("127.0.0.1", base))
            except OSError:
                continue
        return base
    raise RuntimeError("no free relay block")


_HANDED_OUT: set[int] = set()  # never the same port twice in one run: a peer picked
# earlier may not have bound it yet (two sipps racing for one port failed a run)


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 right now, not handed out before."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind(("127.0.0.1", 0))
            port = int(udp.getsockname()[1])
            if port in _HANDED_OUT:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind(("127.0.0.1", port))
                except OSError:
                    continue
                _HANDED_OUT.add(port)
                return port
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
    args: tuple[str, ...] = ()  # as given to `warmline serve` (wait_until_serving reads --sip)

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
    return ServeProcess(process, log_path, tuple(args))


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


def wait_until_serving(server: ServeProcess, http_port: int | None = None,
                       timeout: float = 10.0) -> None:
    """Until `warmline serve` takes SIP, not only HTTP.

    serve opens its HTTP API first and its SIP listeners a moment later, so a test
    that sends SIP once "HTTP API on" is logged now and then loses its first INVITE
    (a rare 10 s timeout in CI). This waits for the "listening on" line of every
    ``--sip`` listener in the arguments (of any listener when they come from a config
    file); with ``http_port``, then until ``GET /readyz`` answers 200 (a listener is
    open and the node takes calls). Fails with the end of serve's log.
    """
    import time

    import httpx

    deadline = time.monotonic() + timeout
    given = [value for flag, value in itertools.pairwise(server.args) if flag == "--sip"]
    for listener in [str(parse_listen(value)) for value in given] or [""]:
        wait_for_log(server, f"listening on {listener}", max(deadline - time.monotonic(), 0.1))
    if http_port is None:
        return
    last = "no answer"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(f"warmline exited early:\n{server.log()[-4000:]}")
        try:
            ready = httpx.get(f"http://127.0.0.1:{http_port}/readyz", timeout=1.0)
            if ready.status_code == 200:
                return
            last = f"{ready.status_code} {ready.text}"
        except httpx.HTTPError as error:
            last = repr(error)
        time.sleep(0.05)
    raise AssertionError(f"/readyz on port {http_port} not 200 within {timeout}s "
                         f"(last: {last}):\n{server.log()[-4000:]}")


def stop_process(process: subprocess.Popen[Any], sig: int = signal.SIGTERM,
                 timeout: float = 10.0) -> int:
    """Signal a process by PID, give it ``timeout`` seconds, then kill it."""
    if process.poll() is None:
        process.send_signal(sig)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def stop_serve(server: ServeProcess, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
    return stop_process(server.process, sig, timeout)


def self_signed_certificate(workdir: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 made with the openssl command."""
    cert, key = workdir / "cert.pem", workdir / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60)
    return cert, key


def speech_files(workdir: Path, text: str, wav_rate: int = 8000) -> tuple[Path, Path]:
    """Speech from espeak-ng as raw G.711 u-law (for sipp) and a 16-bit WAV (for baresip).

    baresip's aufile wants the WAV at its codec's rate (16 kHz for G.722).
    """
    import wave

    from warmline.media import g711
    from warmline.media.tts import EspeakTts

    samples = EspeakTts().synthesize(text)
    raw = workdir / "speech.ulaw"
    raw.write_bytes(g711.ulaw_encode(samples))
    wav_path = workdir / "speech.wav"
    with wave.open(str(wav_path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(wav_rate)
        writer.writeframes(EspeakTts().synthesize(text, wav_rate).tobytes())
    return raw, wav_path


@dataclass
class Baresip:
    """A headless baresip that auto-answers, plays a WAV and records what it hears."""

    workdir: Path
    sip_port: int
    process: subprocess.Popen[bytes]

    @property
    def uri(self) -> str:
        return f"sip:human@127.0.0.1:{self.sip_port}"

    def recording(self) -> Path:
        found = sorted(self.workdir.glob("dump-*-dec.wav"))
        assert found, "baresip recorded nothing"
        return found[-1]


@contextlib.contextmanager
def baresip(workdir: Path, speaks: Path, codec: str = "PCMU/8000/1") -> Iterator[Baresip]:
    import time

    home = workdir / "baresip"
    home.mkdir()
    sip_port, rtp_base = free_port(), free_port() // 2 * 2
    (home / "config").write_text("\n".join([
        "poll_method epoll", f"sip_listen 127.0.0.1:{sip_port}", "net_interface 127.0.0.1",
        f"rtp_ports {rtp_base}-{rtp_base + 40}", "audio_player alsa,null",
        f"audio_source aufile,{speaks}", "audio_alert alsa,null",
        "module_path /usr/lib/baresip/modules", "module g711.so", "module g722.so",
        "module aufile.so", "module alsa.so", "module sndfile.so", "module_app account.so",
        "module_app menu.so", f"snd_path {home}", ""]))
    (home / "accounts").write_text(
        f"<sip:human@127.0.0.1:{sip_port}>;regint=0;answermode=auto;audio_codecs={codec}\n")
    log = (home / "baresip.log").open("wb")
    process = subprocess.Popen(["timeout", "60", "baresip", "-f", str(home)], stdout=log,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while b"baresip is ready" not in (home / "baresip.log").read_bytes():
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError("baresip did not start: "
                                     + (home / "baresip.log").read_text(errors="replace"))
            time.sleep(0.05)
        yield Baresip(home, sip_port, process)
    finally:
        stop_process(process, timeout=5)
        log.close()


@contextlib.contextmanager
def capture_udp(workdir: Path, port: int, seconds: int = 30) -> Iterator[Path]:
    """tshark on loopback for packets to ``port``; bounded in time, stopped by PID."""
    import time

    pcap = workdir / f"capture-{port}.pcapng"
    process = subprocess.Popen(
        ["tshark", "-i", "lo", "-f", f"udp dst port {port}", "-w", str(pcap),
         "-a", f"duration:{seconds}", "-q"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _until_capturing(process, time.monotonic() + 5.0)
        time.sleep(0.3)  # "Capturing on" comes a moment before packets are caught
        yield pcap
    finally:
        time.sleep(0.3)
        stop_process(process)


def _until_capturing(process: subprocess.Popen[bytes], deadline: float) -> None:
    """Wait for tshark's "Capturing on" line (stderr), at most until ``deadline``."""
    import select
    import time

    assert process.stderr is not None
    said = b""
    while b"Capturing on" not in said and time.monotonic() < deadline:
        ready, _, _ = select.select([process.stderr], [], [], 0.05)
        if ready:
            chunk = os.read(process.stderr.fileno(), 4096)
            if not chunk:
                return  # tshark exited: the test's own checks will say what is missing
            said += chunk


def rtp_arrivals(pcap: Path, port: int) -> list[tuple[float, int, int]]:
    """(time, ssrc, sequence) of the RTP packets captured to ``port``."""
    result = subprocess.run(
        ["tshark", "-r", str(pcap), "-d", f"udp.port=={port},rtp", "-T", "fields",
         "-e", "frame.time_epoch", "-e", "rtp.ssrc", "-e", "rtp.seq"],
        capture_output=True, text=True, timeout=60, check=True)
    rows = []
    for line in result.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 3 and all(parts):
            rows.append((float(parts[0]), int(parts[1], 16), int(parts[2])))
    return rows
