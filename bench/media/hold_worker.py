"""Runs warmline's relay with N legs looping ringback to one sink, for bench/hold_audio.py.

Prints one JSON line (the event loop's thread id) once every loop plays, then plays
until stdin closes. Usage: python hold_worker.py CALLS PORT_START SINK_PORT
"""

from __future__ import annotations

import sys
import threading

from worker_loop import run, serve_until_stdin_closes

from warmline.media.player import Player, ringback
from warmline.media.relay import EmbeddedRelay, PortRange
from warmline.media.sdp import CODECS, AudioStream


async def main(calls: int, port_start: int, sink_port: int) -> None:
    relay = EmbeddedRelay("127.0.0.1", PortRange(port_start, port_start + 4 * calls + 200))
    stream = AudioStream(0, CODECS["pcmu"], None, 20, "127.0.0.1", sink_port, "sendrecv")
    hold = ringback()
    for _ in range(calls):
        leg = await relay.open_leg("caller")
        leg.configure(stream)
        leg.play(Player(hold, loop=True))
    await serve_until_stdin_closes(relay, {"loop_tid": threading.get_native_id()})


if __name__ == "__main__":
    run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
