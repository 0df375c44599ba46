"""A tiny blocking client for rtpengine's ng control protocol (bencode over UDP), for the
bench; the encoding is warmline's own (warmline.media.ng)."""

from __future__ import annotations

import os
import re
import socket
from typing import Any

from warmline.media.ng import bdecode, bencode


class NgClient:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.address = (host, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(2)

    def command(self, **fields: Any) -> dict[str, Any]:
        cookie = os.urandom(4).hex().encode()
        self.sock.sendto(cookie + b" " + bencode(fields), self.address)
        reply = bdecode(self.sock.recv(65535).split(b" ", 1)[1])
        if not isinstance(reply, dict) or reply.get("result") not in (b"ok", b"pong"):
            raise RuntimeError(f"rtpengine: {reply}")
        return dict(reply)

    def bridge_call(self, call_id: str) -> tuple[int, int]:
        """Set up one call; returns (port the caller sends to, port the human sends to)."""
        sdp = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               "m=audio 9 RTP/AVP 0\r\n")
        offer = self.command(command="offer", **{"call-id": call_id, "from-tag": "caller"},
                             sdp=sdp)
        answer = self.command(command="answer", **{"call-id": call_id, "from-tag": "caller",
                                                   "to-tag": "human"}, sdp=sdp)
        return _audio_port(answer["sdp"]), _audio_port(offer["sdp"])

    def close(self) -> None:
        self.sock.close()


def _audio_port(sdp: bytes) -> int:
    match = re.search(rb"m=audio (\d+)", sdp)
    if match is None:
        raise RuntimeError("rtpengine returned SDP without an audio port")
    return int(match.group(1))
