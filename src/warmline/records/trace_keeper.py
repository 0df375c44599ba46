"""The SIP trace keeper: a process of its own that redacts and stores ended calls' traces.

Run by the engine's TraceWriter (trace_writer.py) as ``python -m
warmline.records.trace_keeper FOLDER CLEAN ENGINE_PID``, where CLEAN names the
redaction as ``module:function`` (the engine's is warmline.brain.redact:redact).
Its imports are those of the store and the redaction, not the engine's.

- stdin: batches, each a 4-byte big-endian length and a pickle of a list of raw
  traces (call id, handoff ids, messages as tuples); end of file: exit.
- stdout: for each batch, in order, ``stored <n>`` once it is committed, or
  ``failed <n> <error>`` when it could not be (a full disk, a broken file).

It dies with the engine (Linux: PR_SET_PDEATHSIG), like the records shipper.
"""

from __future__ import annotations

import pickle
import signal
import sqlite3
import sys
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, TextIO

from warmline.records.child import die_with, first_line, named_function
from warmline.records.trace_writer import RawTrace, store_batch

LENGTH_BYTES = 4


def keep(folder: Path, clean: Callable[[str], str], batches: BinaryIO, out: TextIO) -> None:
    """Store each batch read from ``batches`` and report it on ``out``, until end of file."""
    while True:
        head = batches.read(LENGTH_BYTES)
        if len(head) < LENGTH_BYTES:
            return
        body = batches.read(int.from_bytes(head, "big"))
        raw: list[RawTrace] = pickle.loads(body)
        try:
            line = f"stored {store_batch(folder, raw, clean)}"
        except (sqlite3.Error, OSError) as error:
            line = f"failed {len(raw)} {first_line(error)}"
        try:
            out.write(line + "\n")
            out.flush()
        except BrokenPipeError:  # the engine is gone
            return


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: python -m warmline.records.trace_keeper FOLDER MODULE:FUNCTION "
              "ENGINE_PID", file=sys.stderr)
        return 2
    die_with(int(argv[2]))
    # ended by the end of stdin (the engine closing) or with the engine (die_with); a Ctrl-C
    # or a SIGTERM to the whole process group must not cut a batch the engine still counts on
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    keep(Path(argv[0]), named_function(argv[1]), sys.stdin.buffer, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
