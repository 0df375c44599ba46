"""Constant cost over time: one long-running server at a fixed call rate, minute by minute.

A server whose cost per call grows with the calls it has already taken (a scan of
old calls, a structure that only grows) looks fine in a 5-second step and falls
behind after ten minutes. This runs sipp's `-sn uac` (INVITE, 200, ACK, BYE) at
``--rate`` against ONE server process for ``--minutes`` one-minute runs back to
back and prints per minute: calls ok/failed, retransmissions, the INVITE->200
response time (p50/p99 from sipp's -trace_rtt, whole milliseconds: 0 is under 1 ms),
the server's CPU seconds and RSS. sipp writes that trace only every -rtt_freq
times, and not at its exit, so it is asked to write each one.
At the end: last minute / first minute for rate, p99 and CPU, and the RSS growth
after the first minute; then the same figures for each peer and warmline's ratio.

With --transfers the calls are blind-transfer cycles (bench/transfer_cycles.py's sipp
transferee against `warmline serve --flow` with media legs and records, and aiosipua's
transferor): the engine keeps each ended call listed for `[limits] keep_ended_calls`
(120 s), so this is where a heap that grows with the calls of the last minutes shows.
Each minute then also gives the p99 of the two waits that are the transferor's own:
from the ACK to its REFER ("refer"), and from the final NOTIFY to its BYE ("bye").

Run: .venv/bin/python bench/constant_rate.py [--rate 1500] [--minutes 10]
     [--peers warmline,aiosipua] [--transfers]  (aim at about half the one-process
     maximum that `bench/sip_throughput.py --one-process` or bench/transfer_cycles.py finds)
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from sip_throughput import Server, cumulative, free_port, message_rows, rss_mb  # noqa: E402
from transfer_cycles import SCENARIO as TRANSFEREE  # noqa: E402
from transfer_cycles import Commands  # noqa: E402

MINUTE = 60
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Minute:
    ok: int
    failed: int
    retransmissions: int
    p50_ms: float
    p99_ms: float
    cpu_s: float
    rss_mb: float
    refer_p99_ms: float | None = None  # transfer cycles: ACK -> REFER
    bye_p99_ms: float | None = None  # transfer cycles: final NOTIFY -> BYE

    @property
    def row(self) -> str:
        waits = (f"refer p99 {self.refer_p99_ms:4.0f} ms bye p99 {self.bye_p99_ms:4.0f} ms  "
                 if self.refer_p99_ms is not None and self.bye_p99_ms is not None else "")
        return (f"{self.ok:7d} ok {self.failed:4d} failed {self.retransmissions:5d} retrans  "
                f"p50 {self.p50_ms:5.1f} ms p99 {self.p99_ms:6.1f} ms  {waits}"
                f"CPU {self.cpu_s:5.1f} s  RSS {self.rss_mb:6.0f} MB")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def response_times(workdir: Path) -> dict[int, list[float]]:
    """Every response time (ms) sipp traced in ``workdir`` by its number (1: the INVITE's
    200; the transferee's 2 and 3, see bench/scenarios/transferee.xml), sorted; then
    the files are removed."""
    times: dict[int, list[float]] = {}
    for path in workdir.glob("*_rtt.csv"):
        for line in path.read_text().splitlines()[1:]:
            parts = line.split(";")
            try:  # (a line cut short by a sipp stopped at its timeout is skipped)
                times.setdefault(int(parts[2]), []).append(float(parts[1]))
            except (IndexError, ValueError):
                continue
        path.unlink()
    return {number: sorted(values) for number, values in times.items()}


def percentile(values: list[float], share: float) -> float:
    """The value ``share`` of the way up ``values`` (sorted; 0 when there are none)."""
    return values[min(len(values) - 1, int(len(values) * share))] if values else 0.0


def one_minute(port: int, rate: int, workdir: Path, pid: int, scenario: list[str]) -> Minute:
    cpu_before = cpu_seconds(pid)
    calls = rate * MINUTE
    command = ["sipp", *scenario, f"127.0.0.1:{port}", "-r", str(rate), "-m", str(calls),
               "-p", str(free_port()), "-cp", str(free_port()), "-nostdin",
               "-trace_rtt", "-rtt_freq", "1", "-timeout", f"{MINUTE * 2}s",
               "-timeout_error", "-l", str(rate * 4)]
    try:
        result = subprocess.run(command, cwd=workdir, capture_output=True, text=True,
                                timeout=MINUTE * 2 + 30)
        output = result.stdout + result.stderr
    except subprocess.TimeoutExpired as expired:
        output = str(expired.stdout or "")
    rows = message_rows(output.rsplit("Scenario Screen", 1)[-1]
                        .split("Statistics Screen", 1)[0])
    times = response_times(workdir)
    answers = times.get(1) or [0.0]
    transfers = scenario == TRANSFEREE
    return Minute(cumulative(output, "Successful call"), cumulative(output, "Failed call"),
                  sum(row[1] for row in rows if len(row) > 1), statistics.median(answers),
                  percentile(answers, 0.99), cpu_seconds(pid) - cpu_before, rss_mb(pid),
                  percentile(times.get(2, []), 0.99) if transfers else None,
                  percentile(times.get(3, []), 0.99) if transfers else None)


def run_server(name: str, rate: int, minutes: int, transfers: bool) -> list[Minute]:
    kind = "blind-transfer cycles" if transfers else "calls"
    print(f"{name}: {rate} {kind}/s for {minutes} min on one process", flush=True)
    results: list[Minute] = []
    with tempfile.TemporaryDirectory() as scratch, \
            Server(name, Commands(Path(scratch)) if transfers else None) as server:
        scenario = TRANSFEREE if transfers else ["-sn", "uac"]
        for index in range(minutes):
            minute = one_minute(server.port, rate, Path(scratch), server.process.pid,
                                scenario)
            results.append(minute)
            print(f"  minute {index + 1:2d}: {minute.row}", flush=True)
    return results


def summary(name: str, minutes: list[Minute]) -> dict[str, float]:
    first, last = minutes[0], minutes[-1]
    growth = last.rss_mb - (minutes[1].rss_mb if len(minutes) > 1 else first.rss_mb)
    failed = sum(m.failed for m in minutes)
    figures = {"ok_ratio": last.ok / max(1, first.ok),
               "p99_ratio": max(1.0, last.p99_ms) / max(1.0, first.p99_ms),
               "cpu_ratio": last.cpu_s / max(0.01, first.cpu_s),
               "rss_growth": growth, "failed": failed,
               "cpu_per_call_us": 1e6 * sum(m.cpu_s for m in minutes)
               / max(1, sum(m.ok for m in minutes))}
    print(f"  {name:9} last/first minute: calls {figures['ok_ratio']:.3f}x, "
          f"p99 {figures['p99_ratio']:.2f}x, "
          + (f"refer p99 {max(1.0, last.refer_p99_ms) / max(1.0, first.refer_p99_ms):.2f}x, "
             if last.refer_p99_ms is not None and first.refer_p99_ms is not None else "")
          + f"CPU {figures['cpu_ratio']:.2f}x; "
          f"RSS after minute 1 {growth:+.0f} MB; {failed} failed; "
          f"{figures['cpu_per_call_us']:.0f} us CPU a call")
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=int, default=1500)
    parser.add_argument("--minutes", type=int, default=10)
    parser.add_argument("--peers", default="warmline,aiosipua")
    parser.add_argument("--transfers", action="store_true",
                        help="blind-transfer cycles (the engine) instead of answer-only calls")
    args = parser.parse_args()
    if shutil.which("sipp") is None:
        print("sipp not found: run scripts/setup first", file=sys.stderr)
        return 2
    started = time.monotonic()
    runs = {name: run_server(name, args.rate, args.minutes, args.transfers)
            for name in args.peers.split(",")}
    print(f"\nconstant rate {args.rate} calls/s, {args.minutes} x 1 min per server "
          f"({time.monotonic() - started:.0f} s in all):")
    figures = {name: summary(name, minutes) for name, minutes in runs.items()}
    ours = figures.get("warmline")
    for name, theirs in figures.items():
        if name != "warmline" and ours:
            print(f"  warmline / {name}: CPU a call "
                  f"{theirs['cpu_per_call_us'] / max(1.0, ours['cpu_per_call_us']):.2f}x less")
    return 0


if __name__ == "__main__":
    sys.exit(main())
