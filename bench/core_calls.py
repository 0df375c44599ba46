"""Calls per second through the sans-IO core alone (no sockets): INVITE, ACK, BYE per call.

Run: .venv/bin/python bench/core_calls.py [--calls N] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

from warmline.calls.sip_answerer import SipAnswerer
from warmline.server import tune_garbage_collector
from warmline.sip.events import Target
from warmline.sip.useragent import UserAgent

SOURCE = Target("udp", "127.0.0.1", 5061)
TAIL = "Contact: sip:sipp@127.0.0.1:5061\r\nMax-Forwards: 70\r\nSubject: Performance Test\r\n"


def sipp_like(n: int, kind: str, to_tag: str = "") -> bytes:
    branch = f"z9hG4bK-{n}-{kind}"
    to = f"<sip:service@127.0.0.1:5070>{to_tag}"
    common = (
        f"Via: SIP/2.0/UDP 127.0.0.1:5061;branch={branch}\r\n"
        f"From: sipp <sip:sipp@127.0.0.1:5061>;tag={n}SIPpTag00{n}\r\n"
        f"To: {to}\r\nCall-ID: {n}-4242@127.0.0.1\r\n"
    )
    if kind == "INVITE":
        sdp = ("v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n"
               "c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
        return (f"INVITE sip:service@127.0.0.1:5070 SIP/2.0\r\n{common}CSeq: 1 INVITE\r\n"
                f"{TAIL}Content-Type: application/sdp\r\n"
                f"Content-Length: {len(sdp)}\r\n\r\n{sdp}").encode()
    cseq = "1 ACK" if kind == "ACK" else "2 BYE"
    return (f"{kind} sip:service@127.0.0.1:5070 SIP/2.0\r\n{common}CSeq: {cseq}\r\n{TAIL}"
            "Content-Length: 0\r\n\r\n").encode()


def run(calls: int) -> float:
    ua = UserAgent()
    ua.add_listener("udp", "127.0.0.1", 5070)
    clock = [0.0]
    agent = SipAnswerer(ua, lambda: clock[0], "127.0.0.1", 40000)
    start = time.perf_counter()
    for n in range(calls):
        now = clock[0] = n * 0.0005
        ua.receive(sipp_like(n, "INVITE"), SOURCE, now)
        for event in ua.pop_events():
            agent.on_event(event)
        out = ua.pop_transmissions()
        tag = out[-1].data.split(b"To: ", 1)[1].split(b"\r\n", 1)[0].split(b">", 1)[1].decode()
        ua.receive(sipp_like(n, "ACK", tag), SOURCE, now)
        ua.receive(sipp_like(n, "BYE", tag), SOURCE, now)
        for event in ua.pop_events():
            agent.on_event(event)
        ua.pop_transmissions()
        if n % 64 == 0:
            ua.handle_timer(now)
    elapsed = time.perf_counter() - start
    return calls / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=20000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    if args.profile:
        profiler = cProfile.Profile()
        profiler.runcall(run, args.calls)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
        return
    tune_garbage_collector()  # as `warmline serve` does
    rates = sorted(run(args.calls) for _ in range(5))
    print(f"core: median {rates[2]:,.0f} calls/s, best {rates[-1]:,.0f} over 5 rounds of "
          f"{args.calls} calls (INVITE+ACK+BYE parsed, answered, torn down; no sockets)")


if __name__ == "__main__":
    main()
