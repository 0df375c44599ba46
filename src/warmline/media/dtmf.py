"""DTMF as RFC 4733 telephone-events and as SIP INFO application/dtmf-relay.

Callers press 0 to reach a human, so a digit must be reported once, at its
start, however many (retransmitted) packets carry it.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

EVENTS = "0123456789*#ABCD"
_EVENT = struct.Struct("!BBH")


class DtmfError(ValueError):
    """A telephone-event payload or dtmf-relay body that cannot be read (dropped, counted)."""


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    event: int  # 0-15: 0-9, *, #, A-D
    end: bool
    volume: int  # -dBm0, 0-63
    duration: int  # in RTP clock units

    @property
    def digit(self) -> str:
        return EVENTS[self.event]

    @classmethod
    def parse(cls, payload: bytes) -> TelephoneEvent:
        if len(payload) < 4:
            raise DtmfError(f"telephone-event payload of {len(payload)} bytes")
        event, flags, duration = _EVENT.unpack_from(payload)
        if event >= len(EVENTS):
            raise DtmfError(f"telephone-event {event} is not a DTMF digit")
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def to_bytes(self) -> bytes:
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | (self.volume & 0x3F),
                           self.duration & 0xFFFF)


def digit_packets(digit: str, *, duration_ms: int = 100, ptime_ms: int = 20,
                  clock_rate: int = 8000, volume: int = 10) -> list[tuple[bool, bytes]]:
    """(marker, payload) for one digit: updates every ptime, then the end packet 3 times.

    All share the event's start timestamp (RFC 4733 §2.5.1); the caller supplies it.
    """
    if digit.upper() not in EVENTS or len(digit) != 1:
        raise DtmfError(f"not a DTMF digit: {digit!r}")
    event = EVENTS.index(digit.upper())
    step = clock_rate * ptime_ms // 1000
    total = clock_rate * duration_ms // 1000
    packets = [(n == 0, TelephoneEvent(event, False, volume, min(d, total)).to_bytes())
               for n, d in enumerate(range(step, total, step))]
    packets += [(not packets and n == 0, TelephoneEvent(event, True, volume, total).to_bytes())
                for n in range(3)]
    return packets


class DtmfReceiver:
    """Turns a telephone-event packet stream into digits, each reported once."""

    def __init__(self) -> None:
        self._current: tuple[int, int] | None = None  # (timestamp, event)

    def feed(self, timestamp: int, payload: bytes) -> str | None:
        """The digit if this packet starts a new event, else None. Raises DtmfError."""
        event = TelephoneEvent.parse(payload)
        key = (timestamp, event.event)
        if key == self._current:
            return None
        self._current = key
        return event.digit


def parse_dtmf_relay(body: bytes) -> str:
    """The digit in a SIP INFO ``application/dtmf-relay`` body (``Signal=5``)."""
    for line in body.decode("utf-8", "replace").splitlines():
        name, _, value = line.partition("=")
        if name.strip().lower() == "signal":
            digit = value.strip().upper()
            if len(digit) == 1 and digit in EVENTS:
                return digit
            raise DtmfError(f"dtmf-relay Signal {value.strip()!r} is not a DTMF digit")
    raise DtmfError("dtmf-relay body without a Signal line")
