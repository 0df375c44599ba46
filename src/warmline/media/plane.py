"""The narrow interface the call and transfer logic use for media: nothing else.

Everything above this line speaks in legs and mixes. A leg is opened (it gets a
local address to put in SDP), told where its far end is and which codec was
agreed, and then decides what its far end hears: another leg (``route_to``),
prepared audio (``play``), a mix (``MediaMix.join``) or nothing (``silence``).
It also reports what it hears: DTMF, the first spoken word, the audio itself,
and the loss and jitter both ways. Nothing here names a socket, a packet or a
codec object, so the embedded relay (relay.py) implements it in-process and
rtpengine (rtpengine.py, over its ng protocol) implements it too, without
calls/ or transfer/ changing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from warmline.media.player import Player, Samples
from warmline.media.rtcp import ReceptionStats, ReportBlock
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


class Playback(Protocol):
    """Audio being played on a leg.

    The call logic waits on ``done`` before its next step (a whisper ends,
    then the parties are bridged), so it must resolve whichever way the audio
    ends: played out, stopped, or replaced by other audio. Otherwise a step
    would wait for ever on audio nobody hears any more.
    """

    @property
    def done(self) -> asyncio.Future[None]:
        """Resolves when the audio was played out, stopped, or replaced by other audio."""

    def stop(self) -> None:
        """Stop playing now (``done`` resolves); the far end hears nothing until told otherwise."""


class AudioTap(Protocol):
    """Both directions of one leg's audio, 20 ms at a time (8 kHz linear): what its far
    end says and what its far end hears, whoever feeds it. A call recording
    (media/recorder.py) is one: the caller's leg alone carries the whole conversation."""

    def received(self, frame: Samples) -> None:
        """Audio the far end sent (the caller speaking)."""

    def sent(self, frame: Samples) -> None:
        """Audio the far end was sent (the AI, hold audio, the human, a mix)."""


class MediaLeg(Protocol):
    """One RTP endpoint facing one far end (a caller, a human, a bot's stream).

    Its far end hears one thing at a time and each replaces the last on one
    continuous stream, so a switch (AI to hold music to the human) never shows
    the far end a new stream or a gap.
    """

    @property
    def local(self) -> LegAddress:
        """Where the far end must send: the address and port our SDP announces."""

    @property
    def counters(self) -> LegCounters: ...

    @property
    def reception(self) -> ReceptionStats | None:
        """RFC 3550 loss and jitter of what the far end sends (None before ``configure``)."""

    @property
    def far_end_report(self) -> ReportBlock | None:
        """The far end's latest RTCP report block on our stream: the loss and jitter it heard.

        Kept for the call's records; None until one arrives (not every far end sends RTCP).
        """

    @property
    def anchor(self) -> str | None:
        """What of this leg outlives our process (rtpengine's call-id), for the node that
        takes the call over to release once it moved the call to its own legs; None when
        the leg dies with us (the embedded relay)."""

    def configure(self, stream: AudioStream) -> None:
        """The negotiated codec, direction and far end's address (from SDP), again at each
        re-offer; a stream on hold (recvonly/inactive) gets nothing sent to it."""

    def route_to(self, target: MediaLeg | None) -> None:
        """What this leg receives is what ``target``'s far end now hears, and only that.

        Two legs routed to each other are bridged. If ``target`` is playing
        audio, it plays on until this leg's first packet, so the far end hears
        no silence between hold music and the human. None: to nobody. A
        plane may refuse a leg it did not open (TypeError).
        """

    def play(self, player: Player) -> Playback:
        """Play prepared audio (hold music, ringback, a prompt) to the far end, in place
        of whatever it heard."""

    def silence(self) -> None:
        """The far end hears nothing: what plays stops, a routed or pending source is
        forgotten, a mix is left; a leg routed here keeps its own route but is not heard."""

    def record(self, sink: Callable[[Samples], None] | None) -> None:
        """Hand every 20 ms of the far end's audio (8 kHz linear) to ``sink``; None stops.

        While a sink is set every packet must be decoded and handed up (the
        embedded relay keeps the pair off its compiled path), so stop as soon
        as the audio is no longer needed.
        """

    def capture(self, tap: AudioTap | None) -> None:
        """Hand both directions of the leg's audio to ``tap`` (a call recording); None stops.

        Apart from :meth:`record`, so a recording and a voicemail or a bot's stream
        can listen at once. Like ``record`` it keeps the leg off any compiled path.
        """

    @property
    def on_dtmf(self) -> Callable[[str], None] | None:
        """Called with each digit the far end sends as RFC 4733 events; None: nobody listens.

        A setter rather than a subscription: one owner at a time (the call
        logic), and None lets a bridged pair go back to the embedded relay's
        compiled path.
        """

    @on_dtmf.setter
    def on_dtmf(self, callback: Callable[[str], None] | None) -> None: ...

    def detect_first_word(self, callback: Callable[[float], None]) -> None:
        """Call ``callback(loop time)`` once, when the far end starts speaking.

        The time is the onset of the word, not the moment it was confirmed, so
        "trigger to the human's first word" is measured to the word itself; a
        click or a burst of line noise does not count.
        """

    def send_dtmf(self, digit: str) -> None:
        """Send a digit to the far end as RFC 4733 events (an IVR on the human's side).

        Raises DtmfError if the far end did not accept telephone-event, so the
        call logic can choose another way (SIP INFO).
        """

    def close(self) -> None:
        """Release the port; what plays on it stops. Closing twice is harmless."""


class MediaMix(Protocol):
    """A mix-minus conference (attended transfers): each member hears the others, plus a
    voice for all.

    A member whose far end is given anything else to hear (a leg routed to
    it, audio played, silence) leaves by itself, so the call logic never has
    to take legs out before bridging them directly.
    """

    def join(self, leg: MediaLeg) -> None:
        """Add a configured ``leg``: its far end now hears the others, and they hear it.

        TypeError for a leg another plane opened, ValueError for one whose codec the mix
        cannot decode (or that has none yet).
        """

    def speak(self, player: Player) -> asyncio.Future[None]:
        """Mix ``player`` into what every member hears (the AI introducing the caller).

        The future resolves when it has played out, or is replaced or the mix closes.
        """

    def close(self) -> None:
        """Stop mixing; members hear nothing until routed or played to again."""


class MediaPlane(Protocol):
    """Where legs and mixes come from: the embedded relay, or rtpengine (media/rtpengine.py)."""

    async def open_leg(self, label: str) -> MediaLeg:
        """A new leg with a local RTP port, not yet sending; ``label`` names it in errors."""

    def open_mix(self) -> MediaMix:
        """An empty mix; legs of this plane can join it."""

    def spare_legs(self) -> int:
        """How many more legs could be opened now (for readiness; an estimate)."""

    def healthy(self) -> bool:
        """Whether the plane can serve now (rtpengine answers its pings); for /readyz."""

    def release(self, anchor: str) -> None:
        """Free what a dead node's leg left (its ``anchor``) once its call has moved to our
        legs; in the background, failures logged (nothing to do on the embedded relay)."""

    async def close(self) -> None:
        """Close every leg still open and release what the plane holds."""
