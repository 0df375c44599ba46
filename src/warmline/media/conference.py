"""A 3-way (or n-way) conference on the embedded relay, for attended transfers.

Members send their audio in; every 20 ms each member gets the mix of all the
others (mix-minus), encoded in its own codec and stamped on its own
continuous stream. A member that switches to another source (the AI drops out
and the caller is routed straight to the human) leaves the mix by itself.

This is the embedded relay's :class:`~warmline.media.plane.MediaMix`
(``EmbeddedRelay.open_mix``); it works on relay legs' packets, so it imports
relay_leg.py and the relay imports it, never the other way round.
"""

from __future__ import annotations

import asyncio

import numpy as np

from warmline.media.mixer import mix_minus
from warmline.media.plane import MediaLeg
from warmline.media.player import Player
from warmline.media.relay_leg import Pacer, RelayLeg
from warmline.media.rtp import RtpPacket, SyntheticSource

_SILENCE = np.zeros(160, dtype=np.int16)


class _MemberFeed:
    """What one member hears from the conference; stopping it leaves the conference."""

    def __init__(self, conference: Conference, leg: RelayLeg) -> None:
        self.conference = conference
        self.leg = leg
        self.source = SyntheticSource()

    def stop(self) -> None:
        self.conference.leave(self.leg)


class Conference:
    def __init__(self) -> None:
        self._members: dict[RelayLeg, _MemberFeed] = {}
        self._frames: dict[RelayLeg, np.ndarray] = {}
        self._voice: Player | None = None  # the AI speaking to everyone (an introduction)
        self.voice_done: asyncio.Future[None] | None = None
        self.pacer = Pacer(asyncio.get_running_loop(), self._tick)

    def speak(self, player: Player) -> asyncio.Future[None]:
        """Mix ``player`` into what every member hears; the future resolves when it ends."""
        if self.voice_done is not None and not self.voice_done.done():
            self.voice_done.set_result(None)
        self._voice = player
        self.voice_done = asyncio.get_running_loop().create_future()
        return self.voice_done

    @property
    def members(self) -> list[RelayLeg]:
        return list(self._members)

    def join(self, leg: MediaLeg) -> None:
        """Mix ``leg`` in: the others hear it and it hears them, until it is given else to hear.

        Only a leg of the embedded relay has packets to mix (TypeError for any
        other), and only one whose codec can be decoded (ValueError).
        """
        if not isinstance(leg, RelayLeg):
            raise TypeError("conference: legs of the embedded relay only")
        if leg.encoder is None or leg.decoder is None:
            raise ValueError(f"conference: leg {leg.label} has no codec to mix with")
        feed = _MemberFeed(self, leg)
        self._members[leg] = feed
        leg.conference = self
        leg.listen_to(feed)
        if not self.pacer.running:
            self.pacer.start()

    def leave(self, leg: RelayLeg) -> None:
        feed = self._members.pop(leg, None)
        self._frames.pop(leg, None)
        if feed is None:
            return
        if leg.conference is self:
            leg.conference = None
        if leg.source is feed:
            leg.source = None
        if not self._members:
            self.pacer.stop()

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
        mixes = mix_minus(frames)
        voice = self._next_voice_frame()
        if voice is not None:
            mixes = [np.clip(mix.astype(np.int32) + voice, -32768, 32767).astype(np.int16)
                     for mix in mixes]
        for (leg, feed), mixed in zip(members, mixes, strict=True):
            stream = leg.stream
            if stream is not None and leg.encoder is not None:
                packet = feed.source.packet(stream.payload_type, leg.encoder.encode(mixed),
                                            stream.codec.clock_rate)
                leg.send_from(packet, stream)

    def _next_voice_frame(self) -> np.ndarray | None:
        voice = self._voice
        if voice is None:
            return None
        if voice.finished:
            self._voice = None
            if self.voice_done is not None and not self.voice_done.done():
                self.voice_done.set_result(None)
            return None
        return voice.next_frame().astype(np.int32)

    def close(self) -> None:
        self._voice = None
        if self.voice_done is not None and not self.voice_done.done():
            self.voice_done.set_result(None)
        for leg in list(self._members):
            self.leave(leg)
        self.pacer.stop()
        self.pacer.tick = _no_tick  # it held this conference: a cycle only a full collection frees


def _no_tick() -> None:
    """A closed conference's pacer: nothing to mix."""
