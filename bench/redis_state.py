"""What the shared state costs: Redis round trips a node adds per call and per transfer.

Against a redis-server this script starts on a free loopback port (no persistence,
bounded by `timeout`, stopped by PID), it measures with the same code warmline runs:

- limit holds: acquire + release pairs a second (one per human dialled), one client,
  sequential (the latency a transfer waits) and 50 at once (the throughput);
- the heartbeat: how long one beat takes for a node holding N live calls;
- GET /calls across nodes: reading N calls from the registry.

Run: .venv/bin/python bench/redis_state.py [--calls 1000 --pairs 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import subprocess
import tempfile
import time

from warmline.cluster.limits import RedisLimits
from warmline.cluster.registry import SharedState, connect
from warmline.cluster.settings import ClusterSettings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_redis(port: int, folder: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(["timeout", "300", "redis-server", "--port", str(port),
                                "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                "--dir", folder], stdout=subprocess.DEVNULL)
    for _ in range(250):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return process
        except OSError:
            time.sleep(0.02)
    raise SystemExit("redis-server did not start")


async def limits(url: str, pairs: int) -> None:
    node = RedisLimits(connect(url), "bench", 10.0)
    start = time.perf_counter()
    for n in range(pairs):
        hold = await node.acquire(f"sip:human{n % 100}@pbx", 1)
        assert hold is not None
        await node.release(hold)
    seconds = time.perf_counter() - start
    print(f"limit acquire+release, sequential: {pairs / seconds:,.0f} pairs/s "
          f"({seconds / pairs * 1e6:.0f} us a pair)")

    async def worker(index: int) -> None:
        for n in range(pairs // 50):
            hold = await node.acquire(f"sip:human{index}-{n % 10}@pbx", 1)
            assert hold is not None
            await node.release(hold)

    start = time.perf_counter()
    await asyncio.gather(*[worker(i) for i in range(50)])
    seconds = time.perf_counter() - start
    print(f"limit acquire+release, 50 at once: {pairs / seconds:,.0f} pairs/s")
    await node.client.aclose()


async def registry(url: str, calls: int) -> None:
    rows = [{"id": f"call-{n:016x}", "from": "sip:caller@127.0.0.1", "to": "sip:ai@127.0.0.1",
             "state": "ai", "started_at": time.time(), "answered": True,
             "direction": "inbound", "token": "x" * 22, "handoffs": []}
            for n in range(calls)]
    settings = ClusterSettings("bench", url, "http://127.0.0.1:1", "bench", 2.0, 60)
    state = SharedState(settings, connect(url), lambda: rows, list)
    await state.beat()  # the first: registers everything
    start = time.perf_counter()
    for _ in range(10):
        await state.beat()
    beat = (time.perf_counter() - start) / 10
    print(f"heartbeat with {calls} live calls: {beat * 1000:.1f} ms a beat")
    start = time.perf_counter()
    for _ in range(10):
        listed = await state.calls()
    read = (time.perf_counter() - start) / 10
    assert len(listed) == calls
    print(f"GET /calls across nodes, registry read of {calls} calls: {read * 1000:.1f} ms")
    await state.client.aclose()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--pairs", type=int, default=5000)
    args = parser.parse_args()
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        process = start_redis(port, folder)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            asyncio.run(limits(url, args.pairs))
            asyncio.run(registry(url, args.calls))
        finally:
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    main()
