"""Concurrent bridged G.711 calls (50 packets/s each way) the embedded relay sustains on
one core with zero loss and p99 added latency under 1 ms.

A C load generator (bench/media/rtp_load.c, built here with gcc) plays both ends
of every call, with the streams' phases spread over the 20 ms packet time as
real phones would be; bench/media/relay_worker.py runs warmline's relay with
the calls bridged. The rtpengine comparison that issue 3 asks for is not here
yet: this measures warmline alone.

Run: .venv/bin/python bench/media_relay.py [--start 50 --step 50 --max 1500 --seconds 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILD = HERE / ".build"


def build_generator() -> Path:
    binary = BUILD / "rtp_load"
    source = HERE / "media" / "rtp_load.c"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        BUILD.mkdir(exist_ok=True)
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(source)], check=True)
    return binary


def run_step(generator: Path, calls: int, seconds: int, port_start: int) -> dict[str, int]:
    worker = subprocess.Popen(
        [sys.executable, str(HERE / "media" / "relay_worker.py"), str(calls), str(port_start)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None and worker.stdin is not None
        ports = json.loads(worker.stdout.readline())["ports"]
        result = subprocess.run([str(generator), str(seconds), "127.0.0.1", *map(str, ports)],
                                capture_output=True, text=True, timeout=seconds + 60,
                                check=True)
        figures: dict[str, int] = json.loads(result.stdout)
        return figures
    finally:
        if worker.stdin is not None:
            worker.stdin.close()
        try:
            worker.wait(10)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", type=int, default=50)
    parser.add_argument("--step", type=int, default=50)
    parser.add_argument("--max", type=int, default=1500)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--port-start", type=int, default=30000)
    args = parser.parse_args()
    if shutil.which("gcc") is None:
        print("gcc is needed to build the load generator", file=sys.stderr)
        return 2
    generator = build_generator()
    best = 0
    for calls in range(args.start, args.max + 1, args.step):
        figures = run_step(generator, calls, args.seconds, args.port_start)
        lost = figures["sent"] - figures["received"]
        clean = lost == 0 and figures["p99_us"] < 1000
        print(f"  {calls:5d} calls ({2 * calls * 50:6d} packets/s in): lost {lost}, "
              f"p50 {figures['p50_us']} us, p99 {figures['p99_us']} us, "
              f"max {figures['max_us']} us {'clean' if clean else 'NOT clean'}", flush=True)
        if not clean:
            break
        best = calls
    print(f"\nwarmline embedded relay: {best} concurrent G.711 calls with 0 loss and "
          f"p99 added latency < 1 ms (one Python process, uvloop)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
