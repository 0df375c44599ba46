"""Blind-transfer cycles per second: sipp as the transferee against warmline and aiosipua.

One cycle is a whole blind transfer seen from the caller: INVITE, 200, ACK, the
transferor's REFER, 202, NOTIFY 100, NOTIFY 200 (the transfer succeeded), then
the transferor's BYE (bench/scenarios/transferee.xml). warmline runs as a user
runs it: `warmline serve --http --flow` with a one-step blind-transfer flow,
media legs (an RTP relay port pair a call) and the records on (SQLite with its
journal). The peer is aiosipua 0.7.1 doing the same signalling
(bench/peer_servers/aiosipua_transferor.py), installed into a throwaway venv.

For each server the rate rises step by step (a fresh server per step) and the
figure is the highest rate with every cycle complete, zero retransmissions and
zero unexpected messages; then the ratio of warmline to the peer.

Run: .venv/bin/python bench/transfer_cycles.py [--start 100 --step 100 --max 1000 --seconds 5]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from sip_throughput import Step, free_port, measure, peer_python, report  # noqa: E402

TARGET = "sip:human@127.0.0.1:5999"  # never called: the transferee reports the outcome
SCENARIO = ["-sf", str(HERE / "scenarios" / "transferee.xml")]
FLOW = f'start = "transfer"\n[steps.transfer]\ntransfer = {{ to = "{TARGET}", mode = "blind" }}\n'


class Commands:
    """How to start each server under test; warmline's files live in ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        (workdir / "flow.toml").write_text(FLOW)
        self.runs = 0

    def __call__(self, name: str, port: int) -> list[str]:
        if name == "aiosipua":
            return [str(peer_python("aiosipua")),
                    str(HERE / "peer_servers" / "aiosipua_transferor.py"), str(port), TARGET]
        self.runs += 1  # a fresh records folder a run: no step inherits another's backlog
        records = self.workdir / f"records-{self.runs}"
        media = 20000 + (self.runs % 20) * 2000
        return [sys.executable, "-m", "warmline", "serve", "--sip", f"udp:127.0.0.1:{port}",
                "--http", f"127.0.0.1:{free_port()}", "--flow", str(self.workdir / "flow.toml"),
                "--media-ports", f"{media}-{media + 2000}", "--records", str(records),
                "--log-level", "warning"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", type=int, default=100)
    parser.add_argument("--step", type=int, default=100)
    parser.add_argument("--max", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=5, help="length of each step")
    parser.add_argument("--peers", default="warmline,aiosipua")
    args = parser.parse_args()
    if shutil.which("sipp") is None:
        print("sipp not found: run scripts/setup first", file=sys.stderr)
        return 2
    rates = list(range(args.start, args.max + 1, args.step))
    results: dict[str, Step | None] = {}
    with tempfile.TemporaryDirectory() as scratch:
        commands = Commands(Path(scratch))
        for name in args.peers.split(","):
            print(f"{name}: ramping {rates[0]}..{rates[-1]} cycles/s, {args.seconds} s a step",
                  flush=True)
            results[name] = measure(name, rates, args.seconds, commands, SCENARIO)
    report(results, "cycles/s", "highest rate with every blind-transfer cycle complete, "
           "0 retransmissions (sipp transferee, UDP, loopback)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
