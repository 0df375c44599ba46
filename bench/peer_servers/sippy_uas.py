"""A sippy 2.5 UAS that answers every INVITE with 200 + SDP (for bench/sip_throughput.py).

Runs inside sippy's own throwaway venv; written against sippy's public API.
Usage: python sippy_uas.py PORT
"""

import sys

from sippy.CCEvents import CCEventConnect, CCEventTry
from sippy.Core.EventDispatcher import ED2
from sippy.MsgBody import MsgBody
from sippy.SipConf import SipConf
from sippy.SipLogger import SipLogger
from sippy.SipTransactionManager import SipTransactionManager
from sippy.Time.Timeout import Timeout
from sippy.UA import UA
from sippy.Udp_server import Udp_server_opts

SDP = ("v=0\r\no=sippy 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


class Answerer:
    def __init__(self, config):
        self.ua = UA(config, self.on_event)

    def on_event(self, event, ua):
        if isinstance(event, CCEventTry):
            # Answer on the next loop turn: answering inside the callback would send
            # the 200 before sippy sends the 100 Trying that recvRequest returns.
            Timeout(self.connect, 0.0)

    def connect(self):
        self.ua.recvEvent(CCEventConnect((200, "OK", MsgBody(SDP))))


def main():
    port = int(sys.argv[1])
    config = {"_sip_address": "127.0.0.1", "_sip_port": port,
              "_sip_logger": SipLogger("sippy_uas")}
    SipConf.my_uaname = "sippy-bench"

    def on_request(req, sip_t):
        if req.getHFBody("to").getTag() is not None:
            return (req.genResponse(481, "Call Leg/Transaction Does Not Exist"), None, None)
        if req.getMethod() == "INVITE":
            return Answerer(config).ua.recvRequest(req, sip_t)
        return (req.genResponse(200, "OK"), None, None)

    # sippy's default of 3 UDP worker threads reorders sends (the 100 Trying can
    # leave after the 200 OK, which sipp's uac scenario rejects); one keeps order.
    Udp_server_opts.nworkers = 1
    config["_sip_tm"] = SipTransactionManager(config, on_request)
    print("ready", flush=True)
    ED2.loop()


if __name__ == "__main__":
    main()
