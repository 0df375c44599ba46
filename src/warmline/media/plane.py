"""The narrow interface the call and transfer logic use for media.

Everything above this line speaks in legs: open one (it gets a local address to
put in SDP), tell it where the far end is and which codec was agreed, route
one leg's audio into another, close it. The embedded relay (relay.py)
implements it in-process; an rtpengine driver (ng protocol) can implement the
same methods without the transfer logic changing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from warmline.media.player import Player
from warmline.media.sdp import AudioStream


@dataclass(frozen=True, slots=True)
class LegAddress:
    host: str
    port: int


@dataclass
class LegCounters:
    """Per-leg numbers kept for the records; drops never raise."""

    received: int = 0
    sent: int = 0
    malformed: int = 0
    unknown_payload: int = 0
    wrong_source: int = 0
    rtcp: int = 0
    sent_octets: int = 0  # RTP payload octets sent, for RTCP sender reports


class MediaLeg(Protocol):
    @property
    def local(self) -> LegAddress: ...

    @property
    def counters(self) -> LegCounters: ...

    def configure(self, stream: AudioStream) -> None:
        """The negotiated codec and the far end's address (from SDP)."""

    def route_to(self, target: MediaLeg | None) -> None:
        """Send what this leg receives into ``target`` (None: to nobody)."""

    def play(self, player: Player) -> object:
        """Play prepared audio (hold music, ringback, a prompt) to this leg's far end."""

    def close(self) -> None: ...


class MediaPlane(Protocol):
    async def open_leg(self, label: str) -> MediaLeg:
        """A new leg with a local RTP port, not yet sending."""

    async def close(self) -> None: ...
