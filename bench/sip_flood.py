"""A SIP flood from one source while real calls arrive: are the real callers still served?

One sipp floods INVITEs from 127.0.0.2 (an address the server does not trust)
as fast as it can; a second sipp, from 127.0.0.1 (the trusted PBX), places real
calls at a steady 20 per second and times each INVITE's answer (the 200; a 100
Trying first is optional, RFC 3261 §17.2.1, and warmline answers sooner). The
same run is made against sippy's UAS (bench/peer_servers), which has no
overload control, for the ratio.

Reported per server: real calls completed and failed, their answer time
(p50, p99, max; the target is every one within 200 ms), what the flood got
answered, and the server's RSS before the flood, at its end, and ``--settle``
seconds after it (the target: within 20% of the level before).

Run: .venv/bin/python bench/sip_flood.py [--flood-seconds 20 --settle 60 --no-peer]
Every process is bounded by a timeout and stopped by PID.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from sip_throughput import cumulative, free_port, peer_python, wait_until_answering  # noqa: E402

REAL_CALL = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="real call, first response timed">
  <send retrans="500" start_rtd="1">
    <![CDATA[
      INVITE sip:ai@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:pbx@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:ai@[remote_ip]:[remote_port]>
      Call-ID: [call_id]
      CSeq: 1 INVITE
      Contact: <sip:pbx@[local_ip]:[local_port]>
      Max-Forwards: 70
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=pbx 1 1 IN IP4 [local_ip]
      s=-
      c=IN IP4 [local_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 0
      a=rtpmap:0 PCMU/8000
    ]]>
  </send>
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true" rtd="1"/>
  <send>
    <![CDATA[
      ACK [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:pbx@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:ai@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 1 ACK
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <pause milliseconds="2000"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:pbx@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:ai@[remote_ip]:[remote_port]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: 2 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"/>
</scenario>
"""
CONFIG = """[sip]
trusted = ["127.0.0.1/32"]
[media]
ports = "{low}-{high}"
"""


@dataclass
class Outcome:
    server: str
    real_calls: int
    real_ok: int
    real_failed: int
    first_response_ms: list[float]
    flood_sent: int
    flood_answered: int
    rss_before: int
    rss_flood_end: int
    rss_settled: int

    def percentile(self, share: float) -> float:
        values = sorted(self.first_response_ms)
        if not values:
            return float("nan")
        return values[min(len(values) - 1, int(share * len(values)))]

    def report(self) -> str:
        late = sum(ms > 200 for ms in self.first_response_ms)
        growth = (self.rss_settled - self.rss_before) / self.rss_before * 100
        return (f"  {self.server:9} real calls {self.real_ok}/{self.real_calls} ok, "
                f"{self.real_failed} failed; answered (INVITE to 200) "
                f"p50 {self.percentile(0.5):.1f} ms, "
                f"p99 {self.percentile(0.99):.1f} ms, max {max(self.first_response_ms or [0]):.1f}"
                f" ms, {late} over 200 ms\n"
                f"  {'':9} flood: {self.flood_sent} INVITEs sent, {self.flood_answered} calls "
                f"answered; RSS {self.rss_before / 1024:.0f} MB before, "
                f"{self.rss_flood_end / 1024:.0f} MB at the flood's end, "
                f"{self.rss_settled / 1024:.0f} MB after settling ({growth:+.0f}%)")


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_server(name: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    if name == "warmline":
        low = 30000
        (workdir / "warmline.toml").write_text(CONFIG.format(low=low, high=low + 2000))
        command = [sys.executable, "-m", "warmline", "serve", "--config", "warmline.toml",
                   "--sip", f"udp:127.0.0.1:{port}", "--http", f"127.0.0.1:{free_port()}",
                   "--log-level", "error"]
    else:
        command = [str(peer_python(name)), str(HERE / "peer_servers" / f"{name}_uas.py"),
                   str(port)]
    env = {**os.environ, "SIPLOG_LVL": "ERR", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=env, start_new_session=True)


def sipp(args: list[str], workdir: Path, seconds: float) -> subprocess.Popen[str]:
    command = ["sipp", *args, "-nostdin", "-cp", str(free_port()), "-timeout",
               f"{int(seconds)}s"]
    return subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def finish(process: subprocess.Popen[str], timeout: float) -> str:
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
    return output or ""


def response_times(workdir: Path) -> list[float]:
    """Every real call's INVITE-to-200 time in ms, from sipp's -trace_rtt file."""
    times: list[float] = []
    for path in workdir.glob("*_rtt.csv"):
        with path.open() as file:
            for row in csv.reader(file, delimiter=";"):
                if len(row) >= 2 and row[1].replace(".", "", 1).isdigit():
                    times.append(float(row[1]))
    return times


def run(name: str, flood_seconds: int, settle: int, rate: int) -> Outcome:
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(scratch)
        (workdir / "real.xml").write_text(REAL_CALL)
        port = free_port()
        server = start_server(name, port, workdir)
        try:
            wait_until_answering(port)
            time.sleep(2)
            before = rss_kb(server.pid)
            real_seconds = flood_seconds + 10
            real = sipp(["-sf", "real.xml", f"127.0.0.1:{port}", "-i", "127.0.0.1",
                         "-p", str(free_port()), "-r", "20", "-m", str(20 * real_seconds),
                         "-trace_rtt", "-rtt_freq", "1", "-mp", str(free_port())],
                        workdir, real_seconds + 30)
            time.sleep(5)  # real calls settle first, then the flood hits
            flood = sipp(["-sn", "uac", f"127.0.0.1:{port}", "-i", "127.0.0.2",
                          "-p", str(free_port()), "-r", str(rate), "-rate_max", str(rate),
                          "-m", str(rate * flood_seconds), "-l", str(rate * flood_seconds),
                          "-recv_timeout", "2000"], workdir, flood_seconds + 5)
            flood_out = finish(flood, flood_seconds + 20)
            at_end = rss_kb(server.pid)
            real_out = finish(real, real_seconds + 60)
            time.sleep(settle)
            settled = rss_kb(server.pid)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        return Outcome(name, 20 * real_seconds, cumulative(real_out, "Successful call"),
                       cumulative(real_out, "Failed call"), response_times(workdir),
                       cumulative(flood_out, "Outgoing calls created"),
                       cumulative(flood_out, "Successful call"), before, at_end, settled)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flood-seconds", type=int, default=20)
    parser.add_argument("--settle", type=int, default=60)
    parser.add_argument("--rate", type=int, default=20000, help="INVITEs a second asked of "
                        "the flooding sipp (it sends what the box allows)")
    parser.add_argument("--no-peer", action="store_true", help="warmline only")
    args = parser.parse_args()
    servers = ["warmline"] if args.no_peer else ["warmline", "sippy"]
    outcomes = []
    for name in servers:
        print(f"{name}: real calls at 20/s from 127.0.0.1, a flood from 127.0.0.2 for "
              f"{args.flood_seconds} s, then {args.settle} s to settle ...", flush=True)
        outcome = run(name, args.flood_seconds, args.settle, args.rate)
        print(outcome.report(), flush=True)
        outcomes.append(outcome)
    if len(outcomes) == 2:
        ours, peer = outcomes
        print(f"ratio warmline/sippy: answer time p99 "
              f"{ours.percentile(0.99) / max(peer.percentile(0.99), 0.001):.2f}x, real calls ok "
              f"{ours.real_ok}/{peer.real_ok}, RSS growth after settling "
              f"{(ours.rss_settled - ours.rss_before) / 1024:.0f} MB vs "
              f"{(peer.rss_settled - peer.rss_before) / 1024:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
