"""Concurrent bridged G.711 calls (50 packets/s each way) the embedded relay sustains
with zero loss and p99 added latency under 1 ms, 5 ms and 20 ms (this VM's
wake-up jitter alone can exceed 1 ms at light load).

A C load generator (bench/media/rtp_load.c, built here with gcc) plays both ends
of every call, with the streams' phases spread over the 20 ms packet time as
real phones would be; bench/media/relay_worker.py runs warmline's relay with
the calls bridged: "warmline" as shipped (bridged pairs move to the compiled
fast path, media/_fastpath.c: --threads forwarder threads, default one per CPU),
"warmline-py" with every packet in
Python (WARMLINE_FASTPATH=0, uvloop). In the same run the same load goes through rtpengine
(Debian rtpengine-daemon, userspace forwarding, as many worker threads as warmline
has forwarder threads, calls set up over its ng protocol) and through a minimal C
forwarder (control_forwarder.c: one thread, one recvfrom and one sendto per packet), a
control for what the machine allows.

With --codec opus every human leg speaks Opus (48 kHz RTP clock, 20 ms frames of a tone
over noise) and every caller PCMU, so each packet is decoded and encoded again: warmline
on its fast path's thread (libopus), warmline-py on the event loop, rtpengine with its
own transcoder; the C control cannot transcode and sits out. Transcoded payloads cannot
carry a send time, so the generator times them by their RTP timestamps, or by order
for a transcoder that stamps its own (see rtp_load.c). --codec g722 is the same with
G.722 humans (RTP clock 8000, 160 bytes a 20 ms frame; warmline codes it on the fast
path's thread too, media/g722_adpcm.h): the codecs' differences are one table
(HUMAN_CODECS here, TRANSCODED in media/ng_client.py). rtpengine takes part when
`rtpengine --codecs` says it fully supports the codec (Debian's 10.5 does, G722 and opus
alike); otherwise the run says so and reports warmline's two paths alone. A transcoded
run counts from a second after the generator's pause: rtpengine 10.5 meets that silence
in its G.722 output by holding the next half second of packets (see rtp_load.c).

Run: .venv/bin/python bench/media_relay.py [--start 50 --step 50 --max 1500 --seconds 5]
                                           [--codec opus|g722] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE / "media")]
from progress import advance, ramp_progress  # noqa: E402  (bench/ is not a package)

from warmline.media.fastpath import default_threads  # noqa: E402

RELAYS = ["warmline", "warmline-py", "c-control", "rtpengine"]
BUILD = HERE / ".build"


def build(name: str) -> Path:
    binary = BUILD / name
    source = HERE / "media" / f"{name}.c"
    if not binary.exists() or binary.stat().st_mtime < source.stat().st_mtime:
        BUILD.mkdir(exist_ok=True)
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(source)], check=True)
    return binary


def relay_command(relay: str, calls: int, port_start: int, codec: str,
                  threads: int) -> list[str]:
    if relay.startswith("warmline"):
        return [sys.executable, str(HERE / "media" / "relay_worker.py"), str(calls),
                str(port_start), codec, str(threads)]
    if relay == "rtpengine":
        return ["rtpengine", "--interface=127.0.0.1", f"--listen-ng=127.0.0.1:{port_start - 2}",
                "--foreground", "--log-stderr", "--table=-1",
                f"--num-threads={threads or default_threads()}", "-L", "2",
                f"--port-min={port_start}", f"--port-max={port_start + 8 * calls + 100}"]
    return [str(build("control_forwarder")), str(calls), str(port_start)]  # one thread


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of every thread of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def relay_ports(relay: str, worker: subprocess.Popen[str], calls: int,
                port_start: int, codec: str) -> list[int]:
    """The ports the load generator sends to: caller then human, call after call."""
    if relay != "rtpengine":
        assert worker.stdout is not None
        ports: list[int] = json.loads(worker.stdout.readline())["ports"]
        return ports
    from ng_client import NgClient

    client = NgClient(port_start - 2)
    for _ in range(50):  # wait for the daemon to listen
        try:
            client.command(command="ping")
            break
        except OSError:
            time.sleep(0.1)
    ports = [port for n in range(calls)
             for port in client.bridge_call(f"bench-{n}", human_codec=codec)]
    client.close()
    return ports


def _opus(frame: Any) -> bytes:
    import opuslib

    encoder = opuslib.Encoder(48000, 1, opuslib.APPLICATION_VOIP)
    return bytes(encoder.encode(frame.tobytes(), len(frame)))


def _g722(frame: Any) -> bytes:
    from warmline.media.codecs import make_codec

    return make_codec("g722").encode(frame)  # one 8 kHz sample a byte


# The humans' codec in a transcoded run: the rate its test frame is made at, its encoder.
# Its payload type and RTP clock (the generator's timestamp step) are ng_client.TRANSCODED's.
HUMAN_CODECS: dict[str, tuple[int, Callable[[Any], bytes]]] = {
    "opus": (48000, _opus), "g722": (8000, _g722)}


def generator_payloads(codec: str) -> list[str]:
    """rtp_load's -a/-b for a transcoded run: the callers' PCMU and the humans' ``codec``
    (20 ms of a 440 Hz tone over noise, so the codecs work as on speech, not silence)."""
    if codec == "pcmu":
        return []
    import numpy as np
    from ng_client import TRANSCODED

    from warmline.media import g711

    rng = np.random.default_rng(7)

    def tone(rate: int) -> Any:
        at = np.arange(rate // 50) / rate
        return (6000 * np.sin(2 * np.pi * 440 * at) + rng.normal(0, 600, rate // 50)
                ).astype(np.int16)

    pcmu = g711.ulaw_encode(tone(8000))
    rate, encode = HUMAN_CODECS[codec]
    payload_type, rtpmap = TRANSCODED[codec]
    step = int(rtpmap.split("/")[1]) // 50  # 20 ms of the RTP clock
    human = encode(tone(rate))
    return ["-a", f"0:160:{pcmu.hex()}", "-b", f"{payload_type}:{step}:{human.hex()}"]


def rtpengine_transcodes(codec: str) -> bool:
    """Whether this machine's rtpengine fully supports ``codec`` (`rtpengine --codecs`)."""
    listing = subprocess.run(["rtpengine", "--codecs"], capture_output=True, text=True,
                             check=False).stdout
    return codec == "pcmu" or any(
        name.strip().lower() == codec and "fully supported" in support
        for name, _, support in (line.partition(":") for line in listing.splitlines()))


def run_step(generator: Path, relay: str, calls: int, args: argparse.Namespace
             ) -> dict[str, int]:
    seconds, port_start, codec = args.seconds, args.port_start, args.codec
    environment = {**os.environ, "WARMLINE_FASTPATH": "0" if relay == "warmline-py" else "1"}
    worker = subprocess.Popen(relay_command(relay, calls, port_start, codec, args.threads),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL, text=True, env=environment)
    try:
        ports = relay_ports(relay, worker, calls, port_start, codec)
        load = subprocess.Popen([str(generator), *generator_payloads(codec), str(seconds),
                                 "127.0.0.1", *map(str, ports)],
                                stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)  # the generator counts from 0.5 s, once the legs have latched
        cpu_before = process_cpu_seconds(worker.pid)
        output, _ = load.communicate(timeout=seconds + 60)
        cpu_used = process_cpu_seconds(worker.pid) - cpu_before
        if load.returncode != 0:
            raise RuntimeError(f"the load generator failed ({load.returncode})")
        figures: dict[str, int] = json.loads(output)
        figures["cpu_ns_per_packet"] = round(cpu_used * 1e9 / max(figures["received"], 1))
        return figures
    finally:
        if worker.stdin is not None:
            worker.stdin.close()
        try:
            worker.wait(2)
        except subprocess.TimeoutExpired:
            worker.kill()  # the C control runs until killed
            worker.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--start", type=int, default=50)
    parser.add_argument("--step", type=int, default=50)
    parser.add_argument("--max", type=int, default=1500)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--port-start", type=int, default=30000)
    parser.add_argument("--only", choices=RELAYS, action="append",
                        help="run only these relays (repeatable); ratios need warmline and a peer")
    parser.add_argument("--codec", choices=["pcmu", *HUMAN_CODECS], default="pcmu",
                        help="the human legs' codec: opus or g722 transcodes every packet")
    parser.add_argument("--threads", type=int, default=0,
                        help="warmline's forwarder threads ([media] relay_threads; 0: per CPU)")
    args = parser.parse_args()
    if shutil.which("gcc") is None:
        print("gcc is needed to build the load generator", file=sys.stderr)
        return 2
    generator = build("rtp_load")
    if shutil.which("rtpengine") is None:
        print("installing rtpengine-daemon (Debian) for the comparison ...", flush=True)
        subprocess.run(["apt-get", "install", "-y", "-q", "rtpengine-daemon"],
                       capture_output=True, check=False)
    rtpengine = shutil.which("rtpengine") is not None
    if rtpengine and not rtpengine_transcodes(args.codec):
        print(f"rtpengine here cannot transcode PCMU<->{args.codec} (rtpengine --codecs): "
              "warmline's two paths only", flush=True)
        rtpengine = False
    relays = [relay for relay in RELAYS if (not args.only or relay in args.only)
              and (relay != "rtpengine" or rtpengine)
              and (relay != "c-control" or args.codec == "pcmu")]
    results = {relay: ramp(generator, relay, args) for relay in relays}
    print_summary(results, args.codec)
    return 0


LATENCY_BOUNDS_US = (1_000, 5_000, 20_000)
# rtpengine's transcoder sends a frame about one frame late (p50 19 ms at 50 calls), so a
# transcoded run also counts calls under a 100 ms bound, where a jitter buffer still copes.
TRANSCODED_BOUNDS_US = (5_000, 20_000, 100_000)


def latency_bounds(codec: str) -> tuple[int, ...]:
    return LATENCY_BOUNDS_US if codec == "pcmu" else TRANSCODED_BOUNDS_US


@dataclass
class Ramp:
    """One relay's ramp: for each latency bound, the highest step below which
    every step was lossless under it; and the relay's CPU per forwarded packet at each
    lossless step (its own efficiency, whatever the load generator beside it costs)."""

    highest: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BOUNDS_US))  # per bound
    cpu_ns_per_packet: dict[int, int] = field(default_factory=dict)


def ramp(generator: Path, relay: str, args: argparse.Namespace) -> Ramp:
    """Steps up until a packet is lost or p99 passes the widest bound (saturation)."""
    print(f"{relay}: ramping {args.start}..{args.max} calls, {args.seconds} s per step",
          flush=True)
    result, bounds = Ramp(), latency_bounds(args.codec)
    steps = range(args.start, args.max + 1, args.step)
    with ramp_progress(relay, len(steps)) as progress:
        for calls in steps:
            figures = run_step(generator, relay, calls, args)
            advance(progress)
            lost = figures["sent"] - figures["received"]
            late = f" ({-lost} more than sent: from before the pause, over 0.5 s late)" \
                if lost < 0 else ""
            progress.console.print(
                f"  {relay:11} {calls:5d} calls ({2 * calls * 50:6d} packets/s in): "
                f"lost {lost}{late}, p50 {figures['p50_us']} us, p99 {figures['p99_us']} us, "
                f"max {figures['max_us']} us, "
                f"CPU {figures['cpu_ns_per_packet'] / 1000:.1f} us a packet")
            if lost or figures["p99_us"] >= bounds[-1]:
                break
            result.cpu_ns_per_packet[calls] = figures["cpu_ns_per_packet"]
            for index, bound in enumerate(bounds):
                clean_so_far = calls == args.start or result.highest[index] == calls - args.step
                if figures["p99_us"] < bound and clean_so_far:
                    result.highest[index] = calls
    return result


def print_summary(results: dict[str, Ramp], codec: str) -> None:
    bounds = latency_bounds(codec)
    described = " / ".join(f"p99 < {bound // 1000} ms" for bound in bounds)
    calls = "G.711" if codec == "pcmu" else f"PCMU<->{codec} transcoded"
    print(f"\nconcurrent {calls} calls (50 packets/s each way) at 0 loss and {described}:")
    for relay, result in results.items():
        print(f"  {relay:11} " + " / ".join(f"{calls:5d}" for calls in result.highest))
    for peer in ("c-control", "rtpengine"):
        if "warmline" not in results or peer not in results:
            continue
        ours, theirs = results["warmline"], results[peer]
        for index, bound in enumerate(bounds):
            if theirs.highest[index]:
                ratio = ours.highest[index] / theirs.highest[index]
                print(f"  warmline / {peer} at p99 < {bound // 1000} ms: {ratio:.2f}x")
        common = set(ours.cpu_ns_per_packet) & set(theirs.cpu_ns_per_packet)
        if common:  # the same load for both: CPU a packet falls as batches grow
            calls = max(common)
            mine, other = ours.cpu_ns_per_packet[calls], theirs.cpu_ns_per_packet[calls]
            print(f"  relay CPU a forwarded packet at {calls} calls (the kernel's loopback "
                  f"delivery to the far end included): warmline {mine / 1000:.1f} us, "
                  f"{peer} {other / 1000:.1f} us: {other / mine:.2f}x")


if __name__ == "__main__":
    sys.exit(main())
