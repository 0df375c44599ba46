"""A tiny blocking client for rtpengine's ng control protocol (bencode over UDP), for the
bench; the encoding is warmline's own (warmline.media.ng)."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
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

    def bridge_call(self, call_id: str, human_codec: str = "pcmu") -> tuple[int, int]:
        """Set up one call, the caller on PCMU and the human on ``human_codec`` (rtpengine
        transcodes); returns (port the caller sends to, port the human sends to)."""
        caller_sdp = _sdp("0")
        human_sdp = caller_sdp if human_codec == "pcmu" else _sdp(*TRANSCODED[human_codec])
        flags: dict[str, Any] = {}
        if human_codec != "pcmu":  # offer the human only its codec: rtpengine transcodes
            flags["codec"] = {"mask": ["PCMU"], "transcode": [TRANSCODED[human_codec][1]]}
        offer = self.command(command="offer", **{"call-id": call_id, "from-tag": "caller"},
                             sdp=caller_sdp, **flags)
        answer = self.command(command="answer", **{"call-id": call_id, "from-tag": "caller",
                                                   "to-tag": "human"}, sdp=human_sdp)
        return _audio_port(answer["sdp"]), _audio_port(offer["sdp"])

    def hold_call(self, call_id: str, caller_port: int, wav: Path) -> None:
        """A call whose caller (SDP at 127.0.0.1:``caller_port``) hears ``wav`` looped
        (rtpengine's "play media", which needs its transcoding build)."""
        caller_sdp = _sdp("0").replace("m=audio 9 ", f"m=audio {caller_port} ")
        self.command(command="offer", **{"call-id": call_id, "from-tag": "caller"},
                     sdp=caller_sdp)
        self.command(command="answer", **{"call-id": call_id, "from-tag": "caller",
                                          "to-tag": "human"}, sdp=_sdp("0"))
        self.command(command="play media", **{"call-id": call_id, "from-tag": "caller",
                                              "file": str(wav), "repeat-times": 1000})

    def close(self) -> None:
        self.sock.close()


TRANSCODED = {"opus": ("111", "opus/48000/2"), "g722": ("9", "G722/8000")}  # type, rtpmap


def _sdp(payload_type: str, rtpmap: str | None = None) -> str:
    lines = ["v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "c=IN IP4 127.0.0.1", "t=0 0",
             f"m=audio 9 RTP/AVP {payload_type}"]
    if rtpmap is not None:
        lines.append(f"a=rtpmap:{payload_type} {rtpmap}")
    return "\r\n".join(lines) + "\r\n"


def _audio_port(sdp: bytes) -> int:
    match = re.search(rb"m=audio (\d+)", sdp)
    if match is None:
        raise RuntimeError("rtpengine returned SDP without an audio port")
    return int(match.group(1))
