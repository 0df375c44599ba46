"""What callers on hold cost: N G.711 legs each looping ringback, 50 packets/s apiece.

A contact centre's queue is mostly callers listening to hold music; at 1,000 of them
the relay sends 50,000 packets a second. This runs warmline's relay with N legs
playing a looped Player (bench/media/hold_worker.py, one process per step) three ways:

- "warmline": as shipped, the loop sent by the fast path's 20 ms timer thread
  (media/_fastpath.c), the event loop idle;
- "warmline-py": every packet from the event loop (WARMLINE_FASTPATH=0), the
  reference path and what a build without a compiler gets;
- "rtpengine": rtpengine (userspace, as many worker threads as warmline's forwarder)
  playing the same WAV to N calls through its ng "play media" command, looped.

Each step prints the CPU of the whole process and of its event loop (main thread),
per caller on hold, and the packets a second the far ends received against the
50 a caller asked for (a sink socket counts them). The ratio is rtpengine's CPU per
caller to warmline's at the same N.

Run: .venv/bin/python bench/hold_audio.py [--calls 250,500,1000,2000 --seconds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "media"))
from warmline.media.fastpath import default_threads  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
MODES = ["warmline", "warmline-py", "rtpengine"]


def cpu_seconds(stat: Path) -> float:
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


class Sink:
    """A UDP socket that counts what arrives (recvmmsg is not in Python: a thread with a
    large buffer, reading as fast as it can; the count is what matters, not the bytes)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.packets = 0
        self._counting = False
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop:
            try:
                self.sock.recv(2048)
            except TimeoutError:
                continue
            if self._counting:
                self.packets += 1

    def count(self, on: bool) -> None:
        self._counting = on

    def close(self) -> None:
        self._stop = True
        self._thread.join()
        self.sock.close()


def warmline_step(mode: str, calls: int, seconds: float, sink: Sink, port_start: int
                  ) -> dict[str, float]:
    environment = {**os.environ, "WARMLINE_FASTPATH": "0" if mode == "warmline-py" else "1"}
    worker = subprocess.Popen(
        [sys.executable, str(HERE / "media" / "hold_worker.py"), str(calls), str(port_start),
         str(sink.port)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        env=environment)
    try:
        assert worker.stdout is not None
        ready = json.loads(worker.stdout.readline())
        return measure(worker.pid, ready["loop_tid"], seconds, sink)
    finally:
        if worker.stdin is not None:
            worker.stdin.close()
        try:
            worker.wait(5)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()


def measure(pid: int, loop_tid: int, seconds: float, sink: Sink) -> dict[str, float]:
    time.sleep(1.0)  # every loop started and handed over
    process, loop = Path(f"/proc/{pid}/stat"), Path(f"/proc/{pid}/task/{loop_tid}/stat")
    cpu, loop_cpu, started = cpu_seconds(process), cpu_seconds(loop), time.monotonic()
    sink.count(True)
    time.sleep(seconds)
    sink.count(False)
    elapsed = time.monotonic() - started
    figures = {"cpu": (cpu_seconds(process) - cpu) / elapsed,
               "loop_cpu": (cpu_seconds(loop) - loop_cpu) / elapsed,
               "packets_per_second": sink.packets / elapsed}
    sink.packets = 0
    return figures


def rtpengine_step(calls: int, seconds: float, sink: Sink, port_start: int,
                   wav: Path) -> dict[str, float]:
    from ng_client import NgClient

    daemon = subprocess.Popen(
        ["rtpengine", "--interface=127.0.0.1", f"--listen-ng=127.0.0.1:{port_start - 2}",
         "--foreground", "--log-stderr", "--table=-1", f"--num-threads={default_threads()}",
         "-L", "2",
         f"--port-min={port_start}", f"--port-max={port_start + 4 * calls + 100}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = NgClient(port_start - 2)
    try:
        for _ in range(50):
            try:
                client.command(command="ping")
                break
            except OSError:
                time.sleep(0.1)
        for n in range(calls):
            client.hold_call(f"hold-{n}", sink.port, wav)
        return measure(daemon.pid, daemon.pid, seconds, sink)
    finally:
        client.close()
        daemon.terminate()
        try:
            daemon.wait(5)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()


def ringback_wav(folder: Path) -> Path:
    import wave

    from warmline.media.player import ringback

    path = folder / "ringback.wav"
    with wave.open(str(path), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(8000)
        writer.writeframes(ringback().astype("<i2").tobytes())
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", default="250,500,1000,2000")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--port-start", type=int, default=36000)
    parser.add_argument("--only", choices=MODES, action="append")
    args = parser.parse_args()
    modes = [mode for mode in MODES if (not args.only or mode in args.only)
             and (mode != "rtpengine" or shutil.which("rtpengine"))]
    results: dict[tuple[str, int], dict[str, float]] = {}
    sink = Sink()
    with tempfile.TemporaryDirectory() as folder:
        wav = ringback_wav(Path(folder))
        for calls in (int(n) for n in args.calls.split(",")):
            for mode in modes:
                if mode == "rtpengine":
                    figures = rtpengine_step(calls, args.seconds, sink, args.port_start, wav)
                else:
                    figures = warmline_step(mode, calls, args.seconds, sink, args.port_start)
                results[mode, calls] = figures
                loop = "" if mode == "rtpengine" else \
                    f" (event loop {figures['loop_cpu']:.3f})"
                print(f"  {mode:11} {calls:5d} on hold: CPU {figures['cpu']:.3f} of a core{loop}, "
                      f"{figures['cpu'] * 1e6 / calls:.0f} us a second a caller; far ends got "
                      f"{figures['packets_per_second'] / (50 * calls):.1%} of the packets",
                      flush=True)
    sink.close()
    print_ratios(results)
    return 0


def print_ratios(results: dict[tuple[str, int], dict[str, float]]) -> None:
    print("\nCPU per caller on hold, rtpengine / warmline at the same N (higher: warmline "
          "cheaper); the event loop's share of warmline's CPU:")
    for (mode, calls), figures in sorted(results.items(), key=lambda item: item[0][1]):
        if mode != "warmline":
            continue
        loop_share = figures["loop_cpu"] / max(figures["cpu"], 1e-9)
        line = f"  {calls:5d} on hold: event loop {loop_share:.0%} of warmline's CPU"
        peer = results.get(("rtpengine", calls))
        if peer is not None and figures["cpu"] > 0:
            line += f"; rtpengine / warmline {peer['cpu'] / figures['cpu']:.2f}x"
        python = results.get(("warmline-py", calls))
        if python is not None and figures["cpu"] > 0:
            line += f"; warmline-py / warmline {python['cpu'] / figures['cpu']:.2f}x"
        print(line)


if __name__ == "__main__":
    sys.exit(main())
