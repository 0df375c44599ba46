"""Runs warmline's relay with N legs looping ringback to one sink, for bench/hold_audio.py.

Prints one JSON line (the event loop's thread id) once every loop plays, then plays
until stdin closes. Usage: python hold_worker.py CALLS PORT_START SINK_PORT
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading

from warmline.media.player import Player, ringback
from warmline.media.relay import EmbeddedRelay, PortRange
from warmline.media.sdp import CODECS, AudioStream
from warmline.server import tune_garbage_collector


async def main(calls: int, port_start: int, sink_port: int) -> None:
    relay = EmbeddedRelay("127.0.0.1", PortRange(port_start, port_start + 4 * calls + 200))
    stream = AudioStream(0, CODECS["pcmu"], None, 20, "127.0.0.1", sink_port, "sendrecv")
    hold = ringback()
    for _ in range(calls):
        leg = await relay.open_leg("caller")
        leg.configure(stream)
        leg.play(Player(hold, loop=True))
    tune_garbage_collector()
    print(json.dumps({"loop_tid": threading.get_native_id()}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
    await relay.close()


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main(int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
