"""An aiosipua 0.7.1 UAS that answers every INVITE with 200 + SDP (for bench/sip_throughput.py).

Runs inside aiosipua's own throwaway venv on the stock asyncio loop: aiosipua 0.7.1
asserts that its transport is an asyncio.DatagramTransport, which uvloop's is not.
Usage: python aiosipua_uas.py PORT
"""

import asyncio
import sys

from aiosipua import SipUAS, UdpSipTransport, negotiate_sdp


async def serve(port):
    transport = UdpSipTransport(local_addr=("127.0.0.1", port))
    uas = SipUAS(transport)

    def on_invite(call):
        answer = None
        if call.sdp_offer is not None:
            answer, _ = negotiate_sdp(call.sdp_offer, "127.0.0.1", 40000)
        call.accept(answer)

    uas.on_invite = on_invite
    await uas.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


def main():
    asyncio.run(serve(int(sys.argv[1])))


if __name__ == "__main__":
    main()
