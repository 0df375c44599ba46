"""What SRTP costs the embedded relay: CPU per forwarded packet, bridged calls, same run.

Four ways of bridging N calls (50 packets/s each way, PCMU) through warmline's
relay, each in its own worker process:
  fastpath        plain RTP both legs, as shipped (the compiled forwarder, C)
  python          plain RTP both legs, every packet in Python (WARMLINE_FASTPATH=0)
  srtp-plain      the caller's leg SRTP (AES_CM_128_HMAC_SHA1_80), the human's plain
  srtp-srtp       both legs SRTP (each packet unprotected and protected again)
SRTP pairs never go to the compiled forwarder (it does not link libsrtp), so
the question this answers is what they cost against a plain Python pair and
against the fast path. "libsrtp" is the floor: one protect plus one unprotect
through pylibsrtp with no relay at all.

This script plays both ends of every call itself: SRTP packets are protected
ahead of time with the phones' keys, sent paced at 20 ms, and what comes back
is counted (a sample is unprotected with the leg's key to check it). The
worker's CPU (utime+stime from /proc) over the window, divided by the packets
it forwarded, is the figure. rtpengine also does SDES-SRTP; driving it needs
its ng protocol with crypto offers, not done here (bench/media_relay.py
compares plain forwarding with it when it is installed).

Run: .venv/bin/python bench/srtp_relay.py [--calls 100 --seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from warmline.media.rtp import RtpPacket
from warmline.media.sdes import CryptoSuite, SrtpKeys
from warmline.media.srtp import SrtpTransform

MODES = ["fastpath", "python", "srtp-plain", "srtp-srtp"]
SUITE = CryptoSuite.AES_CM_128_HMAC_SHA1_80
PAYLOAD = bytes(range(160))
HERE = Path(__file__).resolve().parent


def phone_key(stream: int) -> bytes:
    return bytes((stream * 7 + n) % 256 for n in range(30))


def leg_key(stream: int) -> bytes:
    return bytes((stream * 11 + n + 100) % 256 for n in range(30))


def secure_streams(mode: str, calls: int) -> set[int]:
    """Which of the 2*calls streams (caller 2k, human 2k+1) are SRTP."""
    if mode == "srtp-plain":
        return {2 * k for k in range(calls)}
    if mode == "srtp-srtp":
        return set(range(2 * calls))
    return set()


# ---------------------------------------------------------------- the worker
async def run_worker(mode: str, calls: int, port_start: int) -> None:
    from warmline.media.relay import EmbeddedRelay, PortRange
    from warmline.media.sdp import CODECS, AudioStream
    from warmline.server import tune_garbage_collector

    relay = EmbeddedRelay("127.0.0.1", PortRange(port_start, port_start + 4 * calls + 200),
                          fast_path=mode == "fastpath")
    secure = secure_streams(mode, calls)
    ports = []
    for k in range(calls):
        legs = [await relay.open_leg("caller"), await relay.open_leg("human")]
        for offset, leg in enumerate(legs):
            stream = 2 * k + offset
            keys = SrtpKeys(SUITE, leg_key(stream), phone_key(stream)) \
                if stream in secure else None
            # the far end is learnt from its first (authenticated) packet: symmetric RTP
            leg.configure(AudioStream(0, CODECS["pcmu"], None, 20, "127.0.0.1", 9,
                                      "sendrecv", srtp=keys))
        legs[0].route_to(legs[1])
        legs[1].route_to(legs[0])
        ports += [legs[0].local.port, legs[1].local.port]
    tune_garbage_collector()
    print(json.dumps({"ports": ports}), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await relay.close()


# ---------------------------------------------------------------- the phones
def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def prepared(mode: str, calls: int, packets: int) -> list[list[bytes]]:
    """Each stream's packets as its phone sends them (protected ahead for SRTP legs)."""
    secure = secure_streams(mode, calls)
    streams = []
    for stream in range(2 * calls):
        plain = [RtpPacket(0, n, 160 * n, 0x1000 + stream, PAYLOAD).to_bytes()
                 for n in range(packets)]
        if stream in secure:
            phone = SrtpTransform(SrtpKeys(SUITE, phone_key(stream), leg_key(stream)))
            plain = [phone.protect(data) for data in plain]
        streams.append(plain)
    return streams


def measure(mode: str, calls: int, seconds: float, port_start: int) -> dict[str, float]:
    packets = int(seconds * 50)
    streams = prepared(mode, calls, packets)
    env = {**os.environ, "WARMLINE_FASTPATH": "1" if mode == "fastpath" else "0"}
    worker = subprocess.Popen([sys.executable, __file__, "--worker", mode, str(calls),
                               str(port_start)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True, env=env)
    socks: list[socket.socket] = []
    try:
        assert worker.stdout is not None and worker.stdin is not None
        ports = json.loads(worker.stdout.readline())["ports"]
        for _ in ports:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind(("127.0.0.1", 0))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.setblocking(False)
            socks.append(sock)
        received = [0] * len(socks)
        samples: list[bytes | None] = [None] * len(socks)
        for index, (sock, port) in enumerate(zip(socks, ports, strict=True)):
            sock.sendto(streams[index][0], ("127.0.0.1", port))  # every leg latches
        time.sleep(0.1)
        _drain(socks, [0] * len(socks), samples)
        start_cpu, start = cpu_seconds(worker.pid), time.monotonic()
        for n in range(1, packets):
            for index, (sock, port) in enumerate(zip(socks, ports, strict=True)):
                sock.sendto(streams[index][n], ("127.0.0.1", port))
            _drain(socks, received, samples)
            pause = start + n * 0.02 - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        time.sleep(0.2)
        _drain(socks, received, samples)
        cpu = cpu_seconds(worker.pid) - start_cpu
        worker.stdin.close()
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
        for sock in socks:
            sock.close()
    _check_samples(mode, calls, samples)
    forwarded = sum(received)
    return {"forwarded": forwarded, "loss": 1 - forwarded / ((packets - 1) * len(ports)),
            "cpu_us_per_packet": cpu / max(forwarded, 1) * 1e6,
            "cpu_share": cpu / seconds}


def _drain(socks: list[socket.socket], received: list[int],
           samples: list[bytes | None]) -> None:
    for index, sock in enumerate(socks):
        while True:
            try:
                data = sock.recv(2048)
            except BlockingIOError:
                break
            received[index] += 1
            if samples[index] is None:  # the first: its rollover counter is 0 for certain
                samples[index] = data


def _check_samples(mode: str, calls: int, samples: list[bytes | None]) -> None:
    """What a phone got is its peer's audio, decrypted with its own leg's key if SRTP."""
    secure = secure_streams(mode, calls)
    for stream, data in enumerate(samples):
        if data is None:
            raise SystemExit(f"{mode}: stream {stream} received nothing")
        if stream in secure:
            phone = SrtpTransform(SrtpKeys(SUITE, phone_key(stream), leg_key(stream)))
            data = phone.unprotect(data)
        if RtpPacket.parse(data).payload != PAYLOAD:
            raise SystemExit(f"{mode}: stream {stream} heard something else")


def libsrtp_floor(rounds: int = 20000) -> float:
    """Microseconds for one protect and one unprotect through pylibsrtp alone."""
    sender = SrtpTransform(SrtpKeys(SUITE, phone_key(0), leg_key(0)))
    receiver = SrtpTransform(SrtpKeys(SUITE, leg_key(0), phone_key(0)))
    packets = [RtpPacket(0, n, 160 * n, 1, PAYLOAD).to_bytes() for n in range(rounds)]
    start = time.process_time()
    for packet in packets:
        receiver.unprotect(sender.protect(packet))
    return (time.process_time() - start) / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--port-start", type=int, default=42000)
    args = parser.parse_args()
    results = {mode: measure(mode, args.calls, args.seconds, args.port_start) for mode in MODES}
    floor = libsrtp_floor()
    python = results["python"]["cpu_us_per_packet"]
    fast = results["fastpath"]["cpu_us_per_packet"]
    print(f"{args.calls} bridged calls, {args.seconds:.0f} s, 50 packets/s each way "
          f"({args.calls * 100} packets/s into the relay)")
    print(f"{'mode':<12} {'forwarded':>9} {'loss':>7} {'CPU us/pkt':>10} {'core':>6} "
          f"{'x python':>8} {'x fastpath':>10}")
    for mode, figures in results.items():
        cost = figures["cpu_us_per_packet"]
        print(f"{mode:<12} {figures['forwarded']:>9.0f} {figures['loss']:>7.2%} {cost:>10.1f} "
              f"{figures['cpu_share']:>6.0%} {cost / python:>8.2f} {cost / fast:>10.1f}")
    print(f"{'libsrtp':<12} {'':>9} {'':>7} {floor:>10.1f}   (protect + unprotect, no relay)")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        try:
            import uvloop

            uvloop.install()
        except ImportError:
            pass
        asyncio.run(run_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    else:
        main()
