"""What the log's redaction costs per record: RedactingFilter (logs.py) on warmline's lines.

Every warmline record goes through the filter before it is written, so it must
stay small next to writing the line itself. The lines are the formats warmline
logs with realistic arguments: ids are random hex (a sixth of them hold six
digits in a row, which makes redact.py run its patterns), call lines carry
E.164 numbers (skipped by the precheck), one line holds secrets to replace.

Run: .venv/bin/python bench/log_redaction.py [--records 20000]
"""

from __future__ import annotations

import argparse
import io
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from warmline.brain.redact import redact
from warmline.logs import RedactingFilter

LINES: list[tuple[str, str, tuple[Any, ...]]] = [
    ("ordinary", "call %s %s -> %s over %s: %s after %.2f s",
     ("call-{id}", "sip:+15550100@carrier.example", "sip:ai@127.0.0.1:5070", "udp",
      "answered", 0.12)),
    ("ordinary", "handoff %s of call %s %s: %s (SIP %s)",
     ("handoff-{id}", "call-{id}", "completed", "connected", 200)),
    ("ordinary", "call %s: trigger %s fired on turn %d: %s",
     ("call-{id}", "explicit_request", 4, {"phrase": "a human",
                                           "text": "get me a human please"})),
    ("ordinary", "cannot send to %s:%s: %s", ("127.0.0.1", 5070, "Connection refused")),
    ("ordinary", "shutting down: %d live call(s)", (3,)),
    ("secrets", "call %s: the caller said %s", ("call-{id}",
                                                "card 4111 1111 1111 1111, PIN 7391")),
]


def records(msg: str, args: tuple[Any, ...], count: int) -> list[logging.LogRecord]:
    """``count`` records of one line, each with fresh random ids."""
    made = []
    for _ in range(count):
        filled = tuple(arg.replace("{id}", secrets.token_hex(8)) if isinstance(arg, str)
                       else arg for arg in args)
        made.append(logging.LogRecord("warmline.calls", logging.INFO, __file__, 1, msg,
                                      filled, None))
    return made


def per_record(work: Callable[[logging.LogRecord], object],
               batch: list[logging.LogRecord], rounds: int = 5) -> float:
    """Microseconds per record, the best of ``rounds`` (a shared machine adds noise only).

    Each round gets fresh copies: the filter rewrites a record it redacts.
    """
    best = float("inf")
    for _ in range(rounds):
        copies = [logging.makeLogRecord(record.__dict__) for record in batch]
        started = time.perf_counter()
        for record in copies:
            work(record)
        best = min(best, (time.perf_counter() - started) / len(copies) * 1e6)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20000)
    count = parser.parse_args().records
    net = RedactingFilter(redact)
    plain = logging.StreamHandler(io.StringIO())
    plain.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    print(f"{'line':52} {'message':>9} {'filter':>8} {'handle':>8} {'+filter':>8}  (us/record)")
    for kind, msg, args in LINES:
        formatted = per_record(logging.LogRecord.getMessage, records(msg, args, count))
        filtered = per_record(net.filter, records(msg, args, count))
        handled = per_record(plain.handle, records(msg, args, count))
        plain.addFilter(net)
        both = per_record(plain.handle, records(msg, args, count))
        plain.removeFilter(net)
        print(f"{kind + ': ' + msg[:42]:52} {formatted:9.2f} {filtered:8.2f} {handled:8.2f} "
              f"{both:8.2f}")
    print("message: LogRecord.getMessage alone; filter: RedactingFilter.filter (its own "
          "getMessage included); handle: a StreamHandler writing the line, without and "
          "with the filter")


if __name__ == "__main__":
    main()
