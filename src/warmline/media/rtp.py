"""RTP packets (RFC 3550 §5.1) and the outgoing stream that hides leg switches.

A caller's UA sees one RTP stream from warmline whatever plays into it: the AI,
hold audio, then the human. :class:`ContinuousStream` rewrites SSRC, sequence
numbers and timestamps of whatever source feeds it so that, across a switch,
the sequence continues by one and the timestamp advances by the real time
elapsed; the marker bit flags the new talkspurt. Receivers that key jitter
buffers on SSRC would otherwise reset or drop audio at every switch.
"""

from __future__ import annotations

import secrets
import struct
from dataclasses import dataclass

_HEADER = struct.Struct("!BBHII")
RTP_VERSION = 2
MAX_RTP_SIZE = 1500


class RtpError(ValueError):
    """A datagram that is not a well-formed RTP packet (it is dropped and counted)."""


@dataclass(slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None  # (profile id, data: a multiple of 4 bytes)

    @classmethod
    def parse(cls, data: bytes) -> RtpPacket:
        if not 12 <= len(data) <= MAX_RTP_SIZE:
            raise RtpError(f"RTP packet of {len(data)} bytes")
        first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
        if first >> 6 != RTP_VERSION:
            raise RtpError(f"RTP version {first >> 6}")
        if is_rtcp_type(second):
            raise RtpError("RTCP packet on the RTP path")
        offset = 12 + 4 * (first & 0x0F)
        if offset > len(data):
            raise RtpError("CSRC list runs past the packet")
        csrcs = struct.unpack_from(f"!{first & 0x0F}I", data, 12)
        extension = None
        if first & 0x10:
            if offset + 4 > len(data):
                raise RtpError("truncated header extension")
            profile, words = struct.unpack_from("!HH", data, offset)
            end = offset + 4 + 4 * words
            if end > len(data):
                raise RtpError("header extension runs past the packet")
            extension = (profile, data[offset + 4 : end])
            offset = end
        end = len(data)
        if first & 0x20:
            padding = data[-1]
            if padding == 0 or offset + padding > end:
                raise RtpError(f"bad padding length {padding}")
            end -= padding
        return cls(second & 0x7F, sequence, timestamp, ssrc, data[offset:end],
                   bool(second & 0x80), csrcs, extension)

    def to_bytes(self) -> bytes:
        first = RTP_VERSION << 6 | len(self.csrcs)
        extension = b""
        if self.extension is not None:
            profile, data = self.extension
            if len(data) % 4:
                raise RtpError("header extension must be a multiple of 4 bytes")
            first |= 0x10
            extension = struct.pack("!HH", profile, len(data) // 4) + data
        second = (0x80 if self.marker else 0) | self.payload_type
        header = _HEADER.pack(first, second, self.sequence & 0xFFFF,
                              self.timestamp & 0xFFFFFFFF, self.ssrc & 0xFFFFFFFF)
        csrcs = struct.pack(f"!{len(self.csrcs)}I", *self.csrcs)
        return header + csrcs + extension + self.payload


def is_rtcp_type(second_byte: int) -> bool:
    """RTCP packet types 192-223 share the port with RTP under rtcp-mux (RFC 5761 §4)."""
    return 192 <= second_byte <= 223


class SyntheticSource:
    """An RTP source warmline makes itself (a prompt, hold audio, a mix): its own SSRC,
    sequence and 20 ms timestamp steps on the receiving leg's clock."""

    FRAME_SECONDS = 0.020

    def __init__(self) -> None:
        self.ssrc = secrets.randbits(32)
        self.sequence = secrets.randbits(16)
        self.timestamp = secrets.randbits(32)

    def packet(self, payload_type: int, payload: bytes, clock_rate: int) -> RtpPacket:
        """The next 20 ms packet carrying ``payload``."""
        packet = RtpPacket(payload_type, self.sequence, self.timestamp, self.ssrc, payload)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + round(clock_rate * self.FRAME_SECONDS)) & 0xFFFFFFFF
        return packet


StreamState = tuple[int, int, bool, int, float, int, bool, int, int, int, int, int]


class ContinuousStream:
    """One outgoing RTP stream fed by changing sources, seamless at every switch.

    ``clock_rate`` is the RTP clock of the negotiated codec (8000 for G.711).
    """

    def __init__(self, ssrc: int, clock_rate: int, first_sequence: int = 0,
                 first_timestamp: int = 0) -> None:
        self.ssrc = ssrc
        self.clock_rate = clock_rate
        self._next_sequence = first_sequence & 0xFFFF
        self._last_timestamp: int | None = None
        self._last_wallclock = 0.0
        self._first_timestamp = first_timestamp & 0xFFFFFFFF
        self._source: int | None = None
        self._sequence_offset = 0
        self._source_base = 0  # the current source's timestamp at the switch
        self._target_base = 0  # our timestamp for that same instant
        self.switches = 0

    def rewrite(self, packet: RtpPacket, now: float, source_rate: int | None = None
                ) -> RtpPacket:
        """The packet as the caller must see it; ``now`` is the sender's clock in seconds.

        Re-stamps ``packet`` in place (the relay owns it) and returns it. A
        source on another RTP clock (G.711 into an Opus leg) is rescaled.
        """
        if packet.ssrc != self._source:
            self._switch_to(packet, now)
            packet.marker = True
        sequence = (packet.sequence + self._sequence_offset) & 0xFFFF
        elapsed = ((packet.timestamp - self._source_base + 2**31) & 0xFFFFFFFF) - 2**31
        if source_rate and source_rate != self.clock_rate:
            elapsed = elapsed * self.clock_rate // source_rate
        timestamp = (self._target_base + elapsed) & 0xFFFFFFFF
        packet.sequence, packet.timestamp, packet.ssrc = sequence, timestamp, self.ssrc
        self._next_sequence = (sequence + 1) & 0xFFFF
        self._last_timestamp = timestamp
        self._last_wallclock = now
        return packet

    def timestamp_at(self, now: float) -> int:
        """Our RTP timestamp for the instant ``now`` (for sender reports)."""
        if self._last_timestamp is None:
            return self._first_timestamp
        elapsed = max(now - self._last_wallclock, 0.0)
        return (self._last_timestamp + round(elapsed * self.clock_rate)) & 0xFFFFFFFF

    def export_state(self) -> StreamState:
        """Everything needed to go on with the stream elsewhere (the compiled fast path)."""
        return (self.ssrc, self._next_sequence, self._last_timestamp is not None,
                self._last_timestamp or 0, self._last_wallclock, self._first_timestamp,
                self._source is not None, self._source or 0, self._sequence_offset,
                self._source_base, self._target_base, self.switches)

    def restore_state(self, state: StreamState) -> None:
        """Go on from where :meth:`export_state`'s taker left the stream."""
        (self.ssrc, self._next_sequence, has_last, last, self._last_wallclock,
         self._first_timestamp, has_source, source, self._sequence_offset, self._source_base,
         self._target_base, self.switches) = state
        self._last_timestamp = last if has_last else None
        self._source = source if has_source else None

    def _switch_to(self, packet: RtpPacket, now: float) -> None:
        if self._source is not None:
            self.switches += 1
        self._source = packet.ssrc
        self._sequence_offset = (self._next_sequence - packet.sequence) & 0xFFFF
        if self._last_timestamp is None:
            target = self._first_timestamp
        else:
            elapsed = max(now - self._last_wallclock, 0.0)
            target = self._last_timestamp + max(1, round(elapsed * self.clock_rate))
        self._source_base = packet.timestamp
        self._target_base = target & 0xFFFFFFFF
