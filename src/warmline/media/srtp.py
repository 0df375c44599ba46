"""SRTP and SRTCP for one leg (RFC 3711), through libsrtp (the ``pylibsrtp`` binding).

A leg has two contexts: one keyed with our key for what it sends, one with
the far end's for what it receives. Both accept any SSRC, so the far end may
change its stream (a PBX switching sources) without a new offer. What fails
authentication or replays is dropped, never forwarded and never used to latch
the leg's far-end address: with SRTP a stranger cannot steal the stream.

Each context is kept while its key stays the same: a re-INVITE that only
puts the call on hold, or in which the far end rekeys its own side, must not
restart the rollover counter of ours (our sequence starts at a random value,
so the first rollover may come at any moment of a call).
"""

from __future__ import annotations

import pylibsrtp

from warmline.media.sdes import CryptoSuite, SrtpKeys

_PROFILES = {
    CryptoSuite.AES_CM_128_HMAC_SHA1_80: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80,
    CryptoSuite.AES_CM_128_HMAC_SHA1_32: pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_32,
}


class SrtpError(ValueError):
    """A packet that fails authentication, replays, or cannot be protected."""


class SrtpTransform:
    """Protects what a leg sends and checks what it receives, with the agreed keys."""

    def __init__(self, keys: SrtpKeys, *, keep_from: SrtpTransform | None = None) -> None:
        """Contexts for ``keys``; each side of ``keep_from`` whose key is unchanged is kept.

        RFC 4568 §7.1.4: a side whose master key did not change goes on with
        its crypto context. A fresh sending context would restart the rollover
        counter at 0 mid-stream: the far end could not authenticate a packet
        again, and the same key would encrypt the same index twice (RFC 3711 §9.1).
        """
        self.keys = keys
        self._outbound: pylibsrtp.Session
        self._inbound: pylibsrtp.Session
        profile = _PROFILES[keys.suite]
        previous = keep_from.keys if keep_from is not None else None
        if keep_from is not None and previous is not None and \
                (previous.suite, previous.local) == (keys.suite, keys.local):
            self._outbound = keep_from._outbound
        else:
            self._outbound = pylibsrtp.Session(pylibsrtp.Policy(
                key=keys.local, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                srtp_profile=profile))
        if keep_from is not None and previous is not None and \
                (previous.suite, previous.remote) == (keys.suite, keys.remote):
            self._inbound = keep_from._inbound
        else:
            self._inbound = pylibsrtp.Session(pylibsrtp.Policy(
                key=keys.remote, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND,
                srtp_profile=profile))

    def protect(self, packet: bytes) -> bytes:
        try:
            return self._outbound.protect(packet)
        except pylibsrtp.Error as error:
            raise SrtpError(f"cannot protect RTP: {error}") from None

    def unprotect(self, packet: bytes) -> bytes:
        try:
            return self._inbound.unprotect(packet)
        except pylibsrtp.Error as error:
            raise SrtpError(f"SRTP packet refused: {error}") from None

    def protect_rtcp(self, packet: bytes) -> bytes:
        try:
            return self._outbound.protect_rtcp(packet)
        except pylibsrtp.Error as error:
            raise SrtpError(f"cannot protect RTCP: {error}") from None

    def unprotect_rtcp(self, packet: bytes) -> bytes:
        try:
            return self._inbound.unprotect_rtcp(packet)
        except pylibsrtp.Error as error:
            raise SrtpError(f"SRTCP packet refused: {error}") from None
