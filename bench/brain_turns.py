"""How long the brain takes per turn: the four triggers, and the packet plus its headers.

Every caller turn runs the triggers in the request path of POST /calls/{id}/turns,
and an escalation builds the context packet and the INVITE's headers before the
phone rings, so both must stay far below a turn's duration (seconds).

Run: .venv/bin/python bench/brain_turns.py [--turns 2000]
"""

from __future__ import annotations

import argparse
import statistics
import time

from warmline.brain.context import build_packet
from warmline.brain.delivery import sip_headers
from warmline.brain.triggers import TriggerConfig, TriggerState, evaluate
from warmline.brain.turns import Action, AuthState, Turn

LINES = ["I was charged twice on my bill this month and I want it fixed.",
         "My card is 4111 1111 1111 1111 and the code is 482913.",
         "This is useless, I already told you, I want to talk to a human!",
         "Yes that's right, my date of birth is the second of April."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--turns", type=int, default=2000)
    args = parser.parse_args()
    turns = [Turn("caller", LINES[n % len(LINES)], intent="billing_dispute",
                  confidence=0.5 + (n % 5) / 10, auth=AuthState(True, "dob"),
                  actions=(Action("lookup", "failed"),) if n % 7 == 0 else ())
             for n in range(args.turns)]
    state, config = TriggerState(), TriggerConfig()
    per_turn = []
    for index, turn in enumerate(turns):
        started = time.perf_counter()
        evaluate(config, state, turn, index)
        per_turn.append(time.perf_counter() - started)
    history = turns[:40]
    started = time.perf_counter()
    rounds = 200
    for _ in range(rounds):
        packet = build_packet(call_id="c", caller_number="sip:+15550100@x", turns=history,
                              state=state, firing=None)
        sip_headers(packet, "handoff-1", "http://127.0.0.1:8080/handoffs/handoff-1?token=t")
    packet_ms = (time.perf_counter() - started) / rounds * 1000
    per_turn.sort()
    print(f"triggers per caller turn: median {statistics.median(per_turn) * 1e6:.0f} us, "
          f"p99 {per_turn[int(len(per_turn) * 0.99)] * 1e6:.0f} us "
          f"({len(per_turn) / sum(per_turn):.0f} turns/s on one core)")
    print(f"packet (40 turns, redacted) + SIP headers: {packet_ms:.2f} ms")


if __name__ == "__main__":
    main()
