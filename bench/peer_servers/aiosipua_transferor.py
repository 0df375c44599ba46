"""An aiosipua 0.7.1 transferor for bench/transfer_cycles.py: answers each INVITE, sends a
REFER once the ACK confirms the dialog, and hangs up (BYE) when the final NOTIFY reports
the transfer's outcome: the signalling warmline's blind transfer does.

aiosipua has no hook on ACK, so its ACK handler is wrapped. Runs in aiosipua's own
throwaway venv on the stock asyncio loop (its transport must be an asyncio one).
Usage: python aiosipua_transferor.py PORT TARGET_URI
"""

import asyncio
import sys

from aiosipua import SipUAS, UdpSipTransport, negotiate_sdp
from aiosipua.dialog import DialogState
from aiosipua.uac import SipUAC
from aiosipua.uas_requests import handle_ack


async def serve(port, target):
    transport = UdpSipTransport(local_addr=("127.0.0.1", port))
    uas = SipUAS(transport)
    uac = SipUAC(transport)
    uas.uac = uac  # responses (202 to the REFER, 200 to the BYE) go to the UAC side

    def on_invite(call):
        answer = None
        if call.sdp_offer is not None:
            answer, _ = negotiate_sdp(call.sdp_offer, "127.0.0.1", 40000)
        call.accept(answer)

    def on_ack(request, addr):
        handle_ack(uas, request, addr)
        call = uas.get_call(request.call_id or "")
        if call is not None and call.dialog.state == DialogState.CONFIRMED:
            uac.send_refer(call.dialog, target, call.source_addr)

    def on_transfer_progress(call_id, status, reason):
        if status >= 200:
            call = uas.get_call(call_id)
            if call is not None:
                call.hangup()

    uas.on_invite = on_invite
    uas.on_transfer_progress = on_transfer_progress
    uas._handlers["ACK"] = on_ack
    await uas.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


def main():
    asyncio.run(serve(int(sys.argv[1]), sys.argv[2]))


if __name__ == "__main__":
    main()
