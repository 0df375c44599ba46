"""A tiny client for rtpengine's ng control protocol (bencode over UDP), for the bench."""

from __future__ import annotations

import os
import re
import socket
from typing import Any


def bencode(value: Any) -> bytes:
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(item) for item in value) + b"e"
    if isinstance(value, dict):
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in sorted(value.items())) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes, index: int = 0) -> tuple[Any, int]:
    kind = data[index : index + 1]
    if kind == b"i":
        end = data.index(b"e", index)
        return int(data[index + 1 : end]), end + 1
    if kind in (b"l", b"d"):
        index += 1
        items: list[Any] = []
        while data[index : index + 1] != b"e":
            item, index = bdecode(data, index)
            items.append(item)
        if kind == b"l":
            return items, index + 1
        return {items[n].decode(): items[n + 1] for n in range(0, len(items), 2)}, index + 1
    colon = data.index(b":", index)
    length = int(data[index:colon])
    return data[colon + 1 : colon + 1 + length], colon + 1 + length


class NgClient:
    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.address = (host, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(2)

    def command(self, **fields: Any) -> dict[str, Any]:
        cookie = os.urandom(4).hex().encode()
        self.sock.sendto(cookie + b" " + bencode(fields), self.address)
        reply, _ = bdecode(self.sock.recv(65535).split(b" ", 1)[1])
        if reply.get("result") not in (b"ok", b"pong"):
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
