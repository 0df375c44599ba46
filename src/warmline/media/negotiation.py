"""One leg's offer/answer across its dialog's life: the first exchange and every re-offer.

A call's media is renegotiated while it lives: the caller's phone puts
warmline on hold (a re-INVITE or UPDATE with sendonly), a PBX moves the
stream to another address, warmline holds the human while it whispers to the
caller. RFC 3264 §8 rules kept here: the o= line keeps its session id and its
version goes up by one only when our SDP changes; a re-offer keeps the codec
already in use when it is still offered, so nothing transcodes mid-call
without need; our direction is the mirror of the peer's, narrowed by our own
hold; an unusable re-offer is refused (SdpError, 488) and the stream goes on
as agreed before.

SRTP (RFC 4568): our key for each suite is drawn once per leg and kept across
re-offers, so a hold does not rekey the stream (the far end's key is taken
afresh from every offer and answer); what we offer follows ``srtp``.
"""

from __future__ import annotations

import dataclasses
import secrets

from warmline.media import sdes, sdp
from warmline.media.plane import MediaLeg
from warmline.media.sdes import CryptoSuite, SdesKey, SrtpPolicy
from warmline.media.sdp import AudioStream, SdpError

_NARROWED_BY_OUR_HOLD = {"sendrecv": "sendonly", "recvonly": "inactive", "sendonly": "sendonly",
                         "inactive": "inactive"}


class Negotiation:
    """Offer/answer state for ``leg``, whose SDP says ``address`` and the leg's port."""

    def __init__(self, leg: MediaLeg, address: str, codecs: list[str],
                 srtp: SrtpPolicy = SrtpPolicy.ACCEPT) -> None:
        if not codecs:
            raise SdpError("media.codecs: at least one codec is needed", 500)
        self.leg = leg
        self.address = address
        self.codecs = codecs
        self.session_id = secrets.randbits(31)
        self.version = secrets.randbits(20)
        self.stream: AudioStream | None = None
        self.holding = False  # we hold the far end (we send hold audio, expect nothing back)
        self._last_media: bytes | None = None  # our last SDP without its o= line
        self.srtp = srtp
        self._keys: dict[CryptoSuite, bytes] = {}  # ours, per suite, for the leg's life
        self._offered: tuple[SdesKey, ...] = ()  # the crypto of our outstanding offer

    def answer(self, offer: bytes) -> bytes:
        """Our answer to an initial offer or a re-offer; configures the leg.

        Raises SdpError (400 unreadable, 488 nothing usable) and leaves the leg
        as it was, so a bad re-offer costs the call nothing.
        """
        keep = self.stream.codec.name if self.stream is not None else None
        text, stream = sdp.answer(offer, self.address, self.leg.local.port, self.codecs,
                                  session_id=self.session_id, version=self.version, keep=keep,
                                  srtp=self.srtp, key_for=self._key)
        if self.holding:
            stream = _with_direction(stream, _NARROWED_BY_OUR_HOLD[stream.direction])
            text = _rewrite_direction(text, stream.direction)
        text = self._stamp(text)
        self.stream = stream
        self.leg.configure(stream)
        return text

    def offer(self, *, hold: bool | None = None, codecs: list[str] | None = None) -> bytes:
        """An offer (initial, or a re-offer to hold or resume the far end)."""
        if hold is not None:
            self.holding = hold
        names = codecs or self._preferred_codecs()
        direction = "sendonly" if self.holding else "sendrecv"
        self._offered = self._offered_keys()
        text = sdp.offer(self.address, self.leg.local.port, names,
                         session_id=self.session_id, version=self.version, direction=direction,
                         crypto=self._offered)
        return self._stamp(text)

    def accept(self, answer: bytes) -> AudioStream:
        """The far end's answer to our offer; configures the leg."""
        stream = sdp.read_answer(answer, self._offered)
        self.stream = stream
        self.leg.configure(stream)
        return stream

    # ------------------------------------------------------------------ helpers
    def _key(self, suite: CryptoSuite) -> bytes:
        if suite not in self._keys:
            self._keys[suite] = sdes.new_key(suite).key
        return self._keys[suite]

    def _offered_keys(self) -> tuple[SdesKey, ...]:
        """RTP/SAVP keys for an offer: the suite in use alone once agreed, else both.

        A re-offer keeps the agreed suite and key so the stream is not rekeyed;
        a first offer lists the 80-bit tag first, then the 32-bit one.
        """
        current = self.stream.srtp if self.stream is not None else None
        if current is not None:
            return (SdesKey(1, current.suite, self._key(current.suite)),)
        if not self.srtp.offers_srtp:
            return ()
        return tuple(SdesKey(tag, suite, self._key(suite))
                     for tag, suite in enumerate(CryptoSuite, start=1))
    def _preferred_codecs(self) -> list[str]:
        """The codec in use first: a re-offer that still lists it keeps it (no transcoding)."""
        if self.stream is None:
            return self.codecs
        current = self.stream.codec.name
        return [current] + [name for name in self.codecs if name.lower() != current.lower()]

    def _stamp(self, text: bytes) -> bytes:
        """Bump o= version only when the SDP changed (RFC 3264 §8)."""
        lines = text.split(b"\r\n")
        body = b"\r\n".join(line for line in lines if not line.startswith(b"o="))
        if self._last_media is not None and body != self._last_media:
            self.version += 1
        self._last_media = body
        return b"\r\n".join(_with_version(line, self.version) if line.startswith(b"o=") else line
                            for line in lines)


def _with_direction(stream: AudioStream, direction: str) -> AudioStream:
    return dataclasses.replace(stream, direction=direction)


def _rewrite_direction(text: bytes, direction: str) -> bytes:
    lines = text.split(b"\r\n")
    marks = {b"a=sendrecv", b"a=sendonly", b"a=recvonly", b"a=inactive"}
    return b"\r\n".join(b"a=" + direction.encode() if line in marks else line for line in lines)


def _with_version(origin: bytes, version: int) -> bytes:
    fields = origin.split(b" ")
    if len(fields) >= 6:
        fields[2] = str(version).encode()
    return b" ".join(fields)
