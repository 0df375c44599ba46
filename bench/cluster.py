"""Kamailio in front of 1, 2 and 3 warmline nodes: calls/s and transfer cycles/s, one run.

The layout of docs/deploy.md on one host: a real kamailio running the shipped
deploy/kamailio/warmline.cfg (hash on Call-ID, record_route, loose_route,
OPTIONS probing; rendered by tests/interop/kamailio.py, tracing off) in front of
`warmline serve --workers N` (N full nodes, ports base..base+N-1, supervised;
its --dispatcher-list is Kamailio's list file). sipp drives, through Kamailio:

- answer-only calls/s: INVITE, 200, ACK, BYE (tests/interop/scenarios/proxy_uac.xml,
  the route set on ACK and BYE); the nodes run the SIP-only answerer, as in
  bench/sip_throughput.py;
- blind-transfer cycles/s: call, answer, REFER, NOTIFY 100/200, BYE
  (bench/scenarios/proxy_transferee.xml); the nodes run `--http --flow` with
  media legs and records, as in bench/transfer_cycles.py.

For each node count the rate rises step by step against the same nodes and the
figure is the highest step with every call complete, 0 failed, 0 retransmitted
(sipp's screens, bench/sip_throughput.py run_step). The CPU each part used
during that step (kamailio, the nodes, sipp) is printed next to it, from /proc.

Honestly: this box has 2 cores, and kamailio (4 UDP children), sipp and the N
nodes all share them. One node already gets most of a core, so with 2 or 3
nodes the gain is capped by the cores left, not by warmline: the ratio here is
a floor. The projection printed at the end is on paper: from the CPU one node
and Kamailio used per call in the 1-node step, the calls a core can carry
(node and Kamailio work together), times 16 cores, assuming what
docs/deploy.md says to deploy (a core per node, Kamailio with cores of its own,
the load coming from elsewhere) and that nothing else (the network, the
database) limits first.

The few failed cycles seen at low load are reorderings, not lost calls:
Kamailio's UDP children relay in parallel, so warmline's REFER, sent as soon as
the flow takes the answered call, can overtake its own 200 OK, and its BYE the
200 to the caller's last NOTIFY; sipp's scenario then aborts that call
("unexpected message"). A step with one such call is not counted clean.

With --kamailio-children 1 one Kamailio process relays every message in order (no
reordering), at the cost of that process's core: 2026-12-01, cycles 500/s with one node and
600/s with two, the box saturated (Kamailio 0.34, the nodes 1.43, sipp 0.14 of its 2 cores).

Run (under the peers lock): flock /tmp/warmline-peers.lock .venv/bin/python bench/cluster.py
     [--nodes 1,2,3 --seconds 4 --calls 500:500:6000 --cycles 100:100:1500
      --kamailio-children 4]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))
from sip_throughput import Step, run_step, wait_until_answering  # noqa: E402
from tests.interop.kamailio import Kamailio, shipped_kamailio  # noqa: E402

UAC = ROOT / "tests" / "interop" / "scenarios" / "proxy_uac.xml"
TRANSFEREE = HERE / "scenarios" / "proxy_transferee.xml"
TARGET = "sip:human@127.0.0.1:5999"  # never called: the transferee reports the outcome
FLOW = f'start = "transfer"\n[steps.transfer]\ntransfer = {{ to = "{TARGET}", mode = "blind" }}\n'
CLK_TCK = os.sysconf("SC_CLK_TCK")


def consecutive_ports(count: int) -> int:
    """A base port with ``count`` ports free after it (UDP and TCP), 40000-60000."""
    for base in range(40000 + os.getpid() % 100 * 50, 60000, 97):
        try:
            for port in range(base, base + count):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    with socket.socket(socket.AF_INET, kind) as probe:
                        probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no run of free ports")


@dataclass
class Nodes:
    """`warmline serve --workers N` and the SIP URIs of its workers."""

    process: subprocess.Popen[bytes]
    uris: list[str]
    ports: list[int]


@contextlib.contextmanager
def nodes(count: int, workdir: Path, transfers: bool) -> Iterator[Nodes]:
    base = consecutive_ports(count)
    args = ["serve", "--workers", str(count), "--sip", f"udp:127.0.0.1:{base}",
            "--records", str(workdir / "records"), "--log-level", "warning",
            "--media-ports", "20000-32000"]
    if transfers:
        (workdir / "flow.toml").write_text(FLOW)
        args += ["--http", f"127.0.0.1:{consecutive_ports(count)}", "--flow",
                 str(workdir / "flow.toml")]
    listing = subprocess.run([sys.executable, "-m", "warmline", *args, "--dispatcher-list"],
                             capture_output=True, text=True, check=True, timeout=30).stdout
    uris = [line.split()[1] for line in listing.splitlines() if line.startswith("1 ")]
    ports = [int(uri.rsplit(":", 1)[1]) for uri in uris]
    process = subprocess.Popen(
        ["timeout", "-k", "5", "900", sys.executable, "-m", "warmline", *args],
        stdout=subprocess.DEVNULL, stderr=(workdir / "serve.log").open("wb"),
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    try:
        for port in ports:
            wait_until_answering(port)
        yield Nodes(process, uris, ports)
    finally:
        process.send_signal(signal.SIGTERM)  # timeout passes it on; the supervisor to all
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def group_cpu(pgid: int) -> float:
    """CPU seconds used so far by every process of a process group (/proc)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # fields after the name: state ppid pgrp ...
            total += int(fields[11]) + int(fields[12])  # utime stime
    return total / CLK_TCK


def children_cpu() -> float:
    """CPU seconds of this script's waited-for children (sipp runs)."""
    usage = os.times()
    return usage.children_user + usage.children_system


@dataclass
class Measured:
    step: Step
    cpu: dict[str, float]  # cores used on average during the step, by part


def ramp(proxy: Kamailio, farm: Nodes, rates: list[int], seconds: int, scenario: Path,
         workdir: Path, label: str) -> Measured | None:
    """The highest clean step through ``proxy``; stops at the first step that is not."""
    best: Measured | None = None
    rendered = workdir / scenario.name
    rendered.write_text(scenario.read_text().replace("@@PROXY_PORT@@", str(proxy.port))
                        .replace("@@HOLD_MS@@", "0"))
    for rate in rates:
        before = (time.monotonic(), group_cpu(proxy.process.pid),
                  group_cpu(farm.process.pid), children_cpu())
        step = run_step(proxy.port, rate, seconds, workdir, ["-sf", str(rendered)])
        wall = time.monotonic() - before[0]
        cpu = {"kamailio": (group_cpu(proxy.process.pid) - before[1]) / wall,
               "nodes": (group_cpu(farm.process.pid) - before[2]) / wall,
               "sipp": (children_cpu() - before[3]) / wall}
        print(f"  {label} {rate:5d}/s: {step.successful}/{step.calls} ok, {step.failed} "
              f"failed, {step.retransmissions} retrans, achieved {step.achieved:.0f}/s "
              f"{'clean' if step.clean else 'NOT clean'}; cores used: "
              + ", ".join(f"{part} {used:.2f}" for part, used in cpu.items()), flush=True)
        if not step.clean:
            break
        best = Measured(step, cpu)
        time.sleep(1.5)
    return best


def measure(count: int, rates: list[int], seconds: int, transfers: bool,
            scratch: Path, children: int) -> Measured | None:
    workdir = scratch / f"{'cycles' if transfers else 'calls'}-{count}"
    workdir.mkdir()
    with nodes(count, workdir, transfers) as farm, \
            shipped_kamailio(workdir / "kamailio", farm.uris, trace=False, debug=1,
                             ping_interval=5, fr_timer_ms=2000, lifetime=900,
                             shm_mb=1024, children=children) as proxy:
        label = f"{count} node(s) {'cycles' if transfers else 'calls'}"
        return ramp(proxy, farm, rates, seconds, TRANSFEREE if transfers else UAC, workdir,
                    label)


def rates(text: str) -> list[int]:
    start, step, stop = (int(part) for part in text.split(":"))
    return list(range(start, stop + 1, step))


def summary(unit: str, results: dict[int, Measured | None]) -> None:
    one = results.get(1)
    print(f"\n{unit} through Kamailio (highest clean step):")
    for count, measured in results.items():
        if measured is None:
            print(f"  {count} node(s): none clean")
            continue
        ratio = f", {measured.step.rate / one.step.rate:.2f}x one node" if one else ""
        cores = ", ".join(f"{part} {used:.2f}" for part, used in measured.cpu.items())
        print(f"  {count} node(s): {measured.step.rate:5d} {unit} asked, "
              f"{measured.step.achieved:6.0f} achieved{ratio}  (cores: {cores})")
    if one is not None and one.cpu["nodes"] > 0 and one.cpu["kamailio"] > 0:
        node_core = one.step.rate / one.cpu["nodes"]  # per second of one node's CPU
        kamailio_core = one.step.rate / one.cpu["kamailio"]
        both = 1 / (1 / node_core + 1 / kamailio_core)  # a core's worth of both parts
        print(f"  per core, from the 1-node step: a node ~{node_core:,.0f} {unit}, Kamailio "
              f"~{kamailio_core:,.0f} {unit}; projection (CPU-bound, a core per node, "
              f"Kamailio's cores in proportion, sipp elsewhere): ~{both:,.0f} {unit} per "
              f"core of the pair, 16 cores ~{16 * both:,.0f} {unit} "
              f"({16 * both / one.step.rate:.1f}x the 1-node figure here)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", default="1,2,3")
    parser.add_argument("--seconds", type=int, default=4, help="length of each step")
    parser.add_argument("--calls", default="500:500:6000", help="START:STEP:MAX calls/s")
    parser.add_argument("--cycles", default="100:100:1500", help="START:STEP:MAX cycles/s")
    parser.add_argument("--only", choices=["calls", "cycles"], default=None)
    parser.add_argument("--kamailio-children", type=int, default=4,
                        help="Kamailio's UDP processes (1 keeps every message in order)")
    args = parser.parse_args()
    counts = [int(n) for n in args.nodes.split(",")]
    print(f"this host: {os.cpu_count()} cores, shared by kamailio "
          f"({args.kamailio_children} children), sipp and "
          "the nodes: see the docstring for what that means for the ratio", flush=True)
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        for transfers, unit, steps in ((False, "calls/s", rates(args.calls)),
                                       (True, "cycles/s", rates(args.cycles))):
            if args.only and args.only != unit.split("/")[0]:
                continue
            results = {count: measure(count, steps, args.seconds, transfers, scratch,
                                      args.kamailio_children) for count in counts}
            summary(unit, results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
