"""What the rtpengine plane costs in signalling: leg opens (offer + answer) and ng round trips.

Starts its own rtpengine (userspace, loopback, bounded by `timeout`, stopped by PID),
opens LEGS legs through RtpenginePlane one after the other, re-configures each once
(offer + answer again, port latching), pings N times, closes them all (delete).
Prints p50/p99 of each. Run: `flock /tmp/warmline-peers.lock .venv/bin/python
bench/media/rtpengine_plane.py [LEGS]`.
"""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import tempfile
import time

from warmline.media.ng import NgClient
from warmline.media.relay import EmbeddedRelay, PortRange
from warmline.media.rtpengine import RtpenginePlane
from warmline.media.sdp import CODECS, AudioStream


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50, p99 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)]
    return f"p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms (n={len(ordered)})"


async def measure(ng_port: int, legs: int) -> None:
    plane = RtpenginePlane(NgClient("127.0.0.1", ng_port),
                           EmbeddedRelay("127.0.0.1", PortRange(24000, 24000 + 4 * legs + 4)))
    opens, configures, pings = [], [], []
    opened = []
    for _ in range(legs):
        began = time.perf_counter()
        opened.append(await plane.open_leg("bench"))
        opens.append(time.perf_counter() - began)
    for leg in opened:
        began = time.perf_counter()
        await leg._tell_rtpengine(AudioStream(0, CODECS["pcmu"], 101, 20, "127.0.0.1", 9000,
                                              "sendrecv"))
        configures.append(time.perf_counter() - began)
    for _ in range(legs):
        began = time.perf_counter()
        await plane.client.command("ping")
        pings.append(time.perf_counter() - began)
    print(f"open_leg (offer + answer):       {_percentiles(opens)}")
    print(f"re-configure (offer + answer):   {_percentiles(configures)}")
    print(f"ng ping round trip:              {_percentiles(pings)}")
    began = time.perf_counter()
    await plane.close()
    print(f"close {legs} legs (delete each):  {(time.perf_counter() - began) * 1000:.0f} ms")


def main() -> None:
    legs = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    ng_port = _free_port()
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            ["timeout", "120", "rtpengine", "--foreground", "--table=-1",
             "--interface=127.0.0.1", f"--listen-ng=127.0.0.1:{ng_port}", "--port-min=34000",
             f"--port-max={34000 + 4 * legs + 100}", "--log-stderr", "--log-level=4"],
            stdout=log, stderr=subprocess.STDOUT)
        try:
            time.sleep(0.5)
            asyncio.run(measure(ng_port, legs))
        finally:
            process.terminate()
            process.wait(timeout=10)


if __name__ == "__main__":
    main()
