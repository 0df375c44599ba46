"""Past capacity: blind-transfer cycles asked for above what the server can take.

A server that takes every call past its capacity fails most of them: requests
wait in its UDP queue past the callers' T1, they retransmit, and the calls
already up get their answers late. warmline caps new calls while its SIP input
waits more than ``[limits] max_queue_delay`` (sip/admission.py) and answers the
rest 503 with Retry-After. This runs the blind-transfer cycle of
bench/transfer_cycles.py (sipp transferee) at rates over the capacity against
warmline as shipped, warmline with the cap off (max_queue_delay = 0) and
aiosipua 0.7.1, each on a fresh server, and prints per rate: cycles completed
a second, calls refused with 503 (sipp counts them as failed), retransmissions.
The figure that matters is completed cycles a second past capacity, and the
retransmissions (calls taken but served late).

Run: .venv/bin/python bench/overload.py [--rates 400,600 --seconds 10]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from sip_throughput import Server, run_step  # noqa: E402
from transfer_cycles import SCENARIO, Commands  # noqa: E402

SHEDDING_OFF = "[limits]\nmax_queue_delay = 0\n"


class Servers(Commands):
    """transfer_cycles' commands, plus warmline with the cap off (its own config file)."""

    def __call__(self, name: str, port: int) -> list[str]:
        if name != "warmline-uncapped":
            return super().__call__(name, port)
        config = self.workdir / "uncapped.toml"
        config.write_text(SHEDDING_OFF)
        return [*super().__call__("warmline", port), "--config", str(config)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="400,600", help="cycles asked for a second")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--servers", default="warmline,warmline-uncapped,aiosipua")
    args = parser.parse_args()
    if shutil.which("sipp") is None:
        print("sipp not found: run scripts/setup first", file=sys.stderr)
        return 2
    rates = [int(rate) for rate in args.rates.split(",")]
    names = args.servers.split(",")
    completed: dict[tuple[str, int], float] = {}
    with tempfile.TemporaryDirectory() as scratch:
        servers = Servers(Path(scratch))
        for rate in rates:
            for name in names:
                with Server(name, servers) as server:
                    step = run_step(server.port, rate, args.seconds, Path(scratch), SCENARIO)
                completed[name, rate] = step.successful / args.seconds
                print(f"  {name:18} {rate:4d}/s asked: {step.successful:5d}/{step.calls} "
                      f"cycles completed ({completed[name, rate]:.0f}/s), {step.failed} failed "
                      f"or refused, {step.retransmissions} retransmissions", flush=True)
    print("completed cycles a second past capacity (sipp transferee, UDP, loopback):")
    for rate in rates:
        row = ", ".join(f"{name} {completed[name, rate]:.0f}" for name in names)
        print(f"  {rate}/s asked: {row}")
        if "warmline" in names:
            for peer in (name for name in names if name != "warmline"):
                if completed[peer, rate] > 0:
                    ratio = completed["warmline", rate] / completed[peer, rate]
                    print(f"    warmline / {peer}: {ratio:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
