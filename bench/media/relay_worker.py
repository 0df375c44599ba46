"""Runs warmline's embedded relay with N bridged calls for bench/media_relay.py.

Prints one JSON line with the legs' ports, then relays until stdin closes.
Usage: python relay_worker.py CALLS PORT_START [HUMAN_CODEC [THREADS]]
(the caller legs speak PCMU; the human legs PCMU, or HUMAN_CODEC transcoded: opus or g722;
THREADS compiled forwarder threads, 0: one per CPU)
"""

from __future__ import annotations

import sys

from worker_loop import run, serve_until_stdin_closes

from warmline.media.relay import EmbeddedRelay, PortRange
from warmline.media.sdp import CODECS, AudioStream


async def main(calls: int, port_start: int, human_codec: str, threads: int) -> None:
    relay = EmbeddedRelay("127.0.0.1", PortRange(port_start, port_start + 4 * calls + 200),
                          fast_path_threads=threads)
    ports = []
    # The far ends are learnt by latching on their first packet (symmetric RTP).
    placeholder = AudioStream(0, CODECS["pcmu"], None, 20, "127.0.0.1", 9, "sendrecv")
    static = CODECS[human_codec].static_payload  # PCMU's is 0: not "or"
    human_stream = AudioStream(111 if static is None else static, CODECS[human_codec],
                               None, 20, "127.0.0.1", 9, "sendrecv")
    for _ in range(calls):
        caller, human = await relay.open_leg("caller"), await relay.open_leg("human")
        caller.configure(placeholder)
        human.configure(human_stream)
        caller.route_to(human)
        human.route_to(caller)
        ports += [caller.local.port, human.local.port]
    await serve_until_stdin_closes(relay, {"ports": ports})


if __name__ == "__main__":
    run(main(int(sys.argv[1]), int(sys.argv[2]),
                     sys.argv[3] if len(sys.argv) > 3 else "pcmu",
                     int(sys.argv[4]) if len(sys.argv) > 4 else 0))
