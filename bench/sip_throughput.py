"""SIP call throughput: sipp `-sn uac` at rising rates against warmline, sippy and aiosipua.

For each server the script raises the call rate step by step and reports the
highest rate at which sipp saw every call succeed with zero retransmissions
and zero unexpected messages; then the ratio of warmline to each peer.

sippy 2.5.0 and aiosipua 0.7.1 are installed into throwaway venvs under
bench/.peers/ by this script; their UAS programs are in bench/peer_servers/.
Every process is bounded by a timeout and stopped by PID.

Run: .venv/bin/python bench/sip_throughput.py [--start 200 --step 200 --max 4000 --seconds 5]
     [--one-process]  (one server for the whole ramp, its memory printed at each step)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from progress import advance, ramp_progress  # noqa: E402  (bench/ is not a package)

PEERS = HERE / ".peers"
PEER_PACKAGES = {"sippy": ["sippy==2.5.0"], "aiosipua": ["aiosipua==0.7.1"]}
OPTIONS_PROBE = (
    "OPTIONS sip:probe@127.0.0.1:{port} SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKprobe{n};rport\r\n"
    "From: <sip:bench@127.0.0.1>;tag=probe\r\nTo: <sip:probe@127.0.0.1>\r\n"
    "Call-ID: probe-{n}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peer_python(name: str) -> Path:
    """The interpreter of a peer's throwaway venv, created on first use."""
    venv = PEERS / name
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"  installing {' '.join(PEER_PACKAGES[name])} into {venv} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *PEER_PACKAGES[name]],
                       check=True)
    return python


def server_command(name: str, port: int) -> list[str]:
    if name == "warmline":
        return [sys.executable, "-m", "warmline", "serve", "--sip", f"udp:127.0.0.1:{port}",
                "--log-level", "warning"]
    return [str(peer_python(name)), str(HERE / "peer_servers" / f"{name}_uas.py"), str(port)]


def wait_until_answering(port: int, timeout: float = 20.0) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(0.3)
        me = sock.getsockname()[1]
        deadline = time.monotonic() + timeout
        n = 0
        while time.monotonic() < deadline:
            n += 1
            sock.sendto(OPTIONS_PROBE.format(port=port, me=me, n=n).encode(), ("127.0.0.1", port))
            try:
                if sock.recv(65535).startswith(b"SIP/2.0"):
                    return
            except TimeoutError:
                continue
    raise RuntimeError(f"server on port {port} did not answer OPTIONS within {timeout}s")


@dataclass
class Step:
    rate: int
    calls: int
    successful: int
    failed: int
    retransmissions: int
    unexpected: int
    achieved: float

    @property
    def clean(self) -> bool:
        return (self.successful == self.calls and self.failed == 0
                and self.retransmissions == 0 and self.unexpected == 0)


_ARROW = re.compile(r"-+>|<-+")


def message_rows(screen: str) -> list[list[int]]:
    """Per message row of sipp's scenario screen: [messages, retrans, timeout, unexpected]."""
    rows = []
    for line in screen.splitlines():
        parts = _ARROW.split(line, maxsplit=1)
        if len(parts) == 2:
            rows.append([int(token) for token in parts[1].split() if token.isdigit()])
    return rows


def cumulative(output: str, counter: str) -> int:
    found = re.findall(rf"{re.escape(counter)}\s*\|\s*[\d.]+\s*(?:cps)?\s*\|\s*([\d.]+)", output)
    return int(float(found[-1])) if found else -1


def run_step(port: int, rate: int, seconds: int, workdir: Path,
             scenario: list[str] | None = None) -> Step:
    """One sipp run at ``rate`` calls/s for ``seconds``: ``scenario`` is sipp's choice of
    scenario (default its built-in UAC: INVITE, 200, ACK, BYE)."""
    calls = rate * seconds
    command = ["sipp", *(scenario or ["-sn", "uac"]), f"127.0.0.1:{port}", "-r", str(rate),
               "-m", str(calls),
               "-p", str(free_port()), "-cp", str(free_port()), "-nostdin",
               "-timeout", f"{seconds * 4 + 20}s", "-timeout_error", "-l", str(rate * 4)]
    try:
        result = subprocess.run(command, cwd=workdir, capture_output=True, text=True,
                                timeout=seconds * 4 + 40)
        output = result.stdout + result.stderr
    except subprocess.TimeoutExpired as expired:
        output = str(expired.stdout or "")
    final = output.rsplit("Scenario Screen", 1)[-1]
    rows = message_rows(final.split("Statistics Screen", 1)[0])
    retrans = sum(row[1] for row in rows if len(row) > 1)
    unexpected = sum(row[3] for row in rows if len(row) > 3)
    achieved = re.findall(r"Call Rate\s*\|\s*[\d.]+ cps\s*\|\s*([\d.]+) cps", output)
    return Step(rate, calls, cumulative(output, "Successful call"),
                cumulative(output, "Failed call"), retrans, unexpected,
                float(achieved[-1]) if achieved else 0.0)


class Server:
    """One server process under test, started fresh for every step and stopped by PID."""

    def __init__(self, name: str,
                 command: Callable[[str, int], list[str]] | None = None) -> None:
        self.name = name
        self.port = free_port()
        env = {**os.environ, "SIPLOG_LVL": "ERR", "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            (command or server_command)(name, self.port), stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env=env, start_new_session=True)

    def __enter__(self) -> Server:
        wait_until_answering(self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def rss_mb(pid: int) -> float:
    """The resident memory of a process, in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def ramp_one_process(name: str, rates: list[int], seconds: int, pause: float = 2.0,
                     command: Callable[[str, int], list[str]] | None = None,
                     scenario: list[str] | None = None) -> Step | None:
    """The highest clean step when one server takes the whole ramp, as a server in
    production does: a cost per call that grows with the calls already taken shows here
    and not with a fresh server per step. Stops at the first step that is not clean;
    prints the server's memory after each step."""
    best: Step | None = None
    with tempfile.TemporaryDirectory() as scratch_dir, Server(name, command) as server:
        for rate in rates:
            step = run_step(server.port, rate, seconds, Path(scratch_dir), scenario)
            print(f"  {name:9} {rate:5d} cps: {step.successful}/{step.calls} ok, "
                  f"{step.failed} failed, {step.retransmissions} retrans, achieved "
                  f"{step.achieved:.0f} cps {'clean' if step.clean else 'NOT clean'}, "
                  f"RSS {rss_mb(server.process.pid):.0f} MB", flush=True)
            if not step.clean:
                break
            best = step
            time.sleep(pause)
    return best


def measure(name: str, rates: list[int], seconds: int,
            command: Callable[[str, int], list[str]] | None = None,
            scenario: list[str] | None = None) -> Step | None:
    """The highest clean step for one server.

    Rates rise step by step; after the first failing step the interval between
    the last clean rate and the failing one is bisected down to a quarter step,
    so the figure is not an artefact of the step size. Every step runs against a
    freshly started server (an overloaded one may carry a backlog into the next
    step), and a failing step is retried once, since one scheduling hiccup on a
    2-core machine is not a limit.
    """

    def attempt(rate: int, scratch: Path) -> Step:
        for _ in range(2):
            with Server(name, command) as server:
                step = run_step(server.port, rate, seconds, scratch, scenario)
            if step.clean:
                break
            time.sleep(2)
        print(f"  {name:9} {rate:5d} cps: {step.successful}/{step.calls} ok, "
              f"{step.failed} failed, {step.retransmissions} retrans, "
              f"{step.unexpected} unexpected, achieved {step.achieved:.0f} cps "
              f"{'clean' if step.clean else 'NOT clean'}", flush=True)
        return step

    best: Step | None = None
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        failed_at = None
        with ramp_progress(name, len(rates)) as progress:
            for rate in rates:
                step = attempt(rate, scratch)
                advance(progress)
                if not step.clean:
                    failed_at = rate
                    break
                best = step
        resolution = max(25, (rates[1] - rates[0]) // 4 if len(rates) > 1 else 25)
        low = best.rate if best else 0
        while failed_at is not None and failed_at - low > resolution:
            middle = (low + failed_at) // 2
            step = attempt(middle, scratch)
            if step.clean:
                best, low = step, middle
            else:
                failed_at = middle
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", type=int, default=200)
    parser.add_argument("--step", type=int, default=200)
    parser.add_argument("--max", type=int, default=4000)
    parser.add_argument("--seconds", type=int, default=5, help="length of each step")
    parser.add_argument("--peers", default="warmline,sippy,aiosipua")
    parser.add_argument("--one-process", action="store_true",
                        help="one server for the whole ramp (no restart, no bisection)")
    args = parser.parse_args()
    if shutil.which("sipp") is None:
        print("sipp not found: run scripts/setup first", file=sys.stderr)
        return 2
    rates = list(range(args.start, args.max + 1, args.step))
    results: dict[str, Step | None] = {}
    for name in args.peers.split(","):
        print(f"{name}: ramping {rates[0]}..{rates[-1]} cps, {args.seconds} s per step", flush=True)
        results[name] = ramp_one_process(name, rates, args.seconds) if args.one_process \
            else measure(name, rates, args.seconds)
    report(results, "calls/s",
           "highest rate with 0 failed calls and 0 retransmissions (sipp -sn uac, UDP, loopback)")
    return 0


def report(results: dict[str, Step | None], unit: str, title: str) -> None:
    """Each server's highest clean rate, then warmline's ratio to each peer."""
    print(f"\n{title}:")
    for name, step in results.items():
        shown = "none clean" if step is None else \
            f"{step.rate:5d} {unit} asked, {step.achieved:6.0f} achieved"
        print(f"  {name:9} {shown}")
    ours = results.get("warmline")
    for name, step in results.items():
        if name != "warmline" and step and ours:
            print(f"  warmline / {name}: {ours.rate / step.rate:.2f}x asked, "
                  f"{ours.achieved / step.achieved:.2f}x achieved")


if __name__ == "__main__":
    sys.exit(main())
