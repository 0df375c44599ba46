"""A 3-way (or n-way) conference on the embedded relay, for attended transfers.

Members send their audio in; every 20 ms each member gets the mix of all the
others (mix-minus), encoded in its own codec and stamped on its own
continuous stream. A member that switches to another source (the AI drops out
and the caller is routed straight to the human) leaves the mix by itself.
"""

from __future__ import annotations

import asyncio
import secrets

import numpy as np

from warmline.media.mixer import mix_minus
from warmline.media.player import FRAME_MS
from warmline.media.relay import RelayLeg
from warmline.media.rtp import RtpPacket

_SILENCE = np.zeros(160, dtype=np.int16)


class _MemberFeed:
    """What one member hears from the conference; stopping it leaves the conference."""

    def __init__(self, conference: Conference, leg: RelayLeg) -> None:
        self.conference = conference
        self.leg = leg
        self.ssrc = secrets.randbits(32)
        self.sequence = secrets.randbits(16)
        self.timestamp = secrets.randbits(32)

    def stop(self) -> None:
        self.conference.leave(self.leg)


class Conference:
    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._members: dict[RelayLeg, _MemberFeed] = {}
        self._frames: dict[RelayLeg, np.ndarray] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._started = 0.0
        self._ticks = 0

    @property
    def members(self) -> list[RelayLeg]:
        return list(self._members)

    def join(self, leg: RelayLeg) -> None:
        if leg.encoder is None or leg.decoder is None:
            raise ValueError(f"conference: leg {leg.label} has no codec to mix with")
        feed = _MemberFeed(self, leg)
        self._members[leg] = feed
        leg.conference = self
        leg.listen_to(feed)
        if self._handle is None:
            self._started, self._ticks = self.loop.time(), 0
            self._tick()

    def leave(self, leg: RelayLeg) -> None:
        feed = self._members.pop(leg, None)
        self._frames.pop(leg, None)
        if feed is None:
            return
        if leg.conference is self:
            leg.conference = None
        if leg.source is feed:
            leg.source = None
        if not self._members and self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def push(self, leg: RelayLeg, packet: RtpPacket) -> None:
        stream, decoder = leg.stream, leg.decoder
        if stream is None or decoder is None or packet.payload_type != stream.payload_type:
            return
        frame = decoder.decode(packet.payload)
        if len(frame) == 160:
            self._frames[leg] = frame

    def _tick(self) -> None:
        members = list(self._members.items())
        frames = [self._frames.pop(leg, _SILENCE) for leg, _ in members]
        for (leg, feed), mixed in zip(members, mix_minus(frames), strict=True):
            stream = leg.stream
            if stream is None or leg.encoder is None:
                continue
            packet = RtpPacket(stream.payload_type, feed.sequence, feed.timestamp, feed.ssrc,
                               leg.encoder.encode(mixed))
            leg.send_from(packet, stream)
            feed.sequence = (feed.sequence + 1) & 0xFFFF
            feed.timestamp = (feed.timestamp + 160 * stream.codec.clock_rate // 8000) \
                & 0xFFFFFFFF
        self._ticks += 1
        self._handle = self.loop.call_at(self._started + self._ticks * FRAME_MS / 1000,
                                         self._tick)

    def close(self) -> None:
        for leg in list(self._members):
            self.leave(leg)
