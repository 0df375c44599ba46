"""The SIP trace of every call: each message warmline sent or received, kept with the records.

When a transfer goes wrong in production the question is always "what did the
PBX actually send?", and the answer must not need a packet capture started
beforehand. So the shell's tap hands every message to :class:`SipTrace`,
which keeps the recent ones per Call-ID in memory (bounded in calls,
messages per call and bytes per message), and when a call ends the engine
writes its legs' messages beside the records (records/trace_store.py).
``warmline trace CALL|HANDOFF`` prints them as a ladder with timings, or
writes a pcap that Wireshark and sngrep open.
"""

from __future__ import annotations

import json
import re
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import NamedTuple

from warmline.sip.events import Target

# spelled out rather than IGNORECASE | MULTILINE: a third of the time, on every message
_CALL_ID = re.compile(rb"\n(?:[Cc][Aa][Ll][Ll]-[Ii][Dd]|[Ii])[ \t]*:[ \t]*([^\r\n]+)")
# a key pressed during the call, carried in a SIP INFO (RFC 2976 with dtmf-relay or
# application/dtmf): one digit a message, so the text redaction cannot see a card number
# headers that carry routing and protocol state only, never a caller's words (compact
# forms included); every other header goes through the redaction
_PROTOCOL_HEADERS = frozenset({
    "via", "v", "call-id", "i", "cseq", "content-length", "l", "max-forwards", "route",
    "record-route", "contact", "m", "expires", "allow", "supported", "k", "require",
    "proxy-require", "unsupported", "session-expires", "x", "min-se", "content-type", "c",
    "event", "o", "subscription-state", "rseq", "rack", "user-agent", "server",
    "allow-events", "u", "accept", "accept-encoding", "accept-language", "refer-sub",
    "timestamp", "date", "www-authenticate", "proxy-authenticate", "authorization",
    "proxy-authorization", "retry-after", "reason", "warning", "min-expires",
    "content-disposition", "content-encoding", "e", "path", "service-route", "privacy"})
_DTMF_BODY = re.compile(r"^(Content-Type|c)[ \t]*:[ \t]*application/dtmf", re.I | re.M)
DTMF = "[dtmf]"


class TracedMessage(NamedTuple):
    """One SIP message as it crossed the wire. A named tuple, not a dataclass: the tap
    makes one for every message in and out on the event loop, and the trace writer
    hands them to its keeper process as they are."""

    at: float  # Unix time
    direction: str  # "in" or "out"
    transport: str
    host: str
    port: int
    text: str

    def as_json(self) -> str:
        return json.dumps({"at": self.at, "dir": self.direction, "transport": self.transport,
                           "host": self.host, "port": self.port, "text": self.text})

    @classmethod
    def from_json(cls, line: str) -> TracedMessage:
        row = json.loads(line)
        return cls(row["at"], row["dir"], row["transport"], row["host"], row["port"],
                   row["text"])

    @property
    def summary(self) -> str:
        """``INVITE`` or ``200 OK``: the start line without the URI and version."""
        first = self.text.split("\r\n", 1)[0]
        return first[8:] if first.startswith("SIP/2.0 ") else first.split(" ", 1)[0]


class SipTrace:
    """Recent SIP messages by Call-ID: at most ``max_calls`` dialogs' worth and
    ``max_total`` bytes in all (the least recent dialogs forgotten first),
    ``max_messages`` a dialog, each message cut at ``max_bytes``."""

    def __init__(self, max_calls: int = 2000, max_messages: int = 300,
                 max_bytes: int = 8192, max_total: int = 32 * 1024 * 1024) -> None:
        self.max_calls, self.max_messages, self.max_bytes = max_calls, max_messages, max_bytes
        self.max_total = max_total
        self._by_call_id: OrderedDict[str, list[TracedMessage]] = OrderedDict()
        self._total = 0  # characters held

    def tap(self, direction: str, data: bytes, peer: Target) -> None:
        """The shell's tap: keep ``data`` under its Call-ID (a message without one: not)."""
        found = _CALL_ID.search(data, 0, 4096)
        if found is None:
            return
        call_id = found.group(1).strip().decode("utf-8", "replace")
        messages = self._by_call_id.pop(call_id, None)
        if messages is None:
            messages = []
            if len(self._by_call_id) >= self.max_calls:
                self._forget_oldest()
        self._by_call_id[call_id] = messages
        if len(messages) < self.max_messages:
            text = data[:self.max_bytes].decode("utf-8", "replace")
            messages.append(TracedMessage(time.time(), direction, peer.transport, peer.host,
                                          peer.port, text))
            self._total += len(text)
            while self._total > self.max_total and len(self._by_call_id) > 1:
                self._forget_oldest()

    def _forget_oldest(self) -> None:
        _, dropped = self._by_call_id.popitem(last=False)
        self._total -= sum(len(message.text) for message in dropped)

    def take(self, call_ids: Iterable[str]) -> list[TracedMessage]:
        """The messages of these Call-IDs, oldest first, forgotten here."""
        taken: list[TracedMessage] = []
        for call_id in call_ids:
            taken += self._by_call_id.pop(call_id, [])
        self._total -= sum(len(message.text) for message in taken)
        return sorted(taken, key=lambda message: message.at)

    def peek(self, call_ids: Iterable[str]) -> list[TracedMessage]:
        """The messages of these Call-IDs so far, oldest first, kept here (a live call)."""
        return sorted((message for call_id in call_ids
                       for message in self._by_call_id.get(call_id, [])),
                      key=lambda message: message.at)


def cleaned(messages: Iterable[TracedMessage],
            clean: Callable[[str], str]) -> list[TracedMessage]:
    """Each message with the keys pressed taken out and ``clean`` (redaction) applied to
    the parts that can carry personal data (see :func:`clean_message`).

    The lines cleaned repeat from message to message of a dialog (its From, To, the
    identities in every request and response), so each distinct line is cleaned once.
    """
    done: dict[str, str] = {}

    def clean_once(text: str) -> str:
        found = done.get(text)
        if found is None:
            found = done[text] = clean(text)
        return found

    return [m._replace(text=clean_message(m.text, clean_once)) for m in messages]


def clean_message(text: str, clean: Callable[[str], str]) -> str:
    """``text`` with ``clean`` applied to its start line, to each header that is not pure
    protocol (From, To, identities, Refer-To, X- headers, Subject: anything a person's
    data can reach) and to any body but SDP; a DTMF body becomes ``[dtmf]``.

    Why not the whole text: the protocol lines (Via branches, CSeq, SDP origins)
    are full of long digit runs that send the redaction down its slow path, which
    at hundreds of calls a second cost a tenth of the event loop; they carry no
    words of the caller's.
    """
    head, separator, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    kept = [clean(lines[0])]
    content_type = ""
    for line in lines[1:]:
        name = line.partition(":")[0].strip().lower()
        if name in ("content-type", "c"):
            content_type = line.partition(":")[2].strip().lower()
        kept.append(line if name in _PROTOCOL_HEADERS else clean(line))
    if body and separator:
        if content_type.startswith("application/dtmf"):
            body = DTMF
        elif not content_type.startswith("application/sdp"):
            body = clean(body)
    return "\r\n".join(kept) + separator + body


def ladder(messages: list[TracedMessage]) -> str:
    """One line a message: seconds from the first, the peer, the arrow and the message."""
    if not messages:
        return "(no messages)"
    start = messages[0].at
    lines = []
    for message in messages:
        peer = f"{message.host}:{message.port}"
        arrow = f"{peer:>21} ──{message.summary}──▶ warmline" if message.direction == "in" \
            else f"{peer:>21} ◀──{message.summary}── warmline"
        lines.append(f"  {message.at - start:8.3f} s  {arrow}")
    return "\n".join(lines)


def pcap(messages: list[TracedMessage], local: tuple[str, int]) -> bytes:
    """The messages as a pcap (raw IPv4 + UDP, LINKTYPE_RAW) for Wireshark or sngrep;
    ``local`` is warmline's address. IPv6 peers and streams are written as IPv4/UDP to
    the same ports: the SIP is what matters."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 101)]
    for message in messages:
        payload = message.text.encode("utf-8", "replace")
        here, there = (_ipv4(local[0]), local[1]), (_ipv4(message.host), message.port)
        source, destination = (there, here) if message.direction == "in" else (here, there)
        udp = struct.pack("!HHHH", source[1], destination[1], 8 + len(payload), 0) + payload
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0,
                         source[0], destination[0]) + udp
        seconds = int(message.at)
        out.append(struct.pack("<IIII", seconds, int((message.at - seconds) * 1e6),
                               len(ip), len(ip)) + ip)
    return b"".join(out)


def _ipv4(host: str) -> bytes:
    parts = host.split(".")
    if len(parts) == 4 and all(part.isdigit() and int(part) < 256 for part in parts):
        return bytes(int(part) for part in parts)
    return bytes([127, 0, 0, 1])
