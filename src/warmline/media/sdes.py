"""SDES keys in SDP (RFC 4568): the ``a=crypto`` attribute read, checked and written.

An ``RTP/SAVP`` offer lists one or more crypto attributes in order of
preference; the answerer takes the first it can honour and answers with the
same tag and suite and its own key. Each attribute refused here carries the
reason, so an offer with nothing usable gets a 488 that says why (a bad key
length, an unknown suite, base64 that does not decode, a master key index or
a session parameter we do not do) instead of a misleading "no common codec".

Pure parsing and key generation: the packet transform itself is srtp.py.
"""

from __future__ import annotations

import base64
import binascii
import enum
import re
import secrets
from dataclasses import dataclass


class CryptoSuite(enum.Enum):
    """The suites we answer and offer: RFC 4568 §6.2's AES counter mode with HMAC-SHA1."""

    AES_CM_128_HMAC_SHA1_80 = "AES_CM_128_HMAC_SHA1_80"
    AES_CM_128_HMAC_SHA1_32 = "AES_CM_128_HMAC_SHA1_32"


class SrtpPolicy(enum.Enum):
    """When a leg's RTP is protected, from ``[media] srtp`` or a trunk's ``srtp``."""

    OFF = "off"  # plain RTP only: RTP/SAVP offers are refused with 488
    ACCEPT = "accept"  # answer RTP/SAVP with SRTP and RTP/AVP with RTP; offer RTP
    REQUIRE = "require"  # SRTP only: offer RTP/SAVP, refuse plain RTP offers with 488

    @property
    def offers_srtp(self) -> bool:
        return self is SrtpPolicy.REQUIRE


MASTER_KEY_AND_SALT = 30  # 16-byte AES-128 key + 14-byte salt, both suites (RFC 4568 §6.2)
_SECURE_PROFILES = ("RTP/SAVP", "RTP/SAVPF")
_TAG = re.compile(r"[0-9]{1,9}\Z")
_LIFETIME = re.compile(r"(?:2\^[0-9]{1,2}|[0-9]{1,20})\Z")
_WINDOW_HINT = re.compile(r"WSH=[0-9]{1,10}\Z")


class CryptoError(ValueError):
    """A crypto attribute we cannot use; the reason goes in the 488's Warning."""


@dataclass(frozen=True, slots=True)
class SdesKey:
    """One crypto attribute: its tag, suite and the 30-byte master key and salt."""

    tag: int
    suite: CryptoSuite
    key: bytes

    def attribute(self) -> dict[str, object]:
        """The attribute as sdp-transform writes it (``a=crypto:TAG SUITE inline:KEY``)."""
        return {"id": self.tag, "suite": self.suite.value,
                "config": "inline:" + base64.b64encode(self.key).decode()}


@dataclass(frozen=True, slots=True)
class SrtpKeys:
    """What an offer/answer agreed for one SRTP stream: the suite and both sides' keys."""

    suite: CryptoSuite
    local: bytes  # protects what we send
    remote: bytes  # checks what the far end sends


def is_secure_profile(protocol: str) -> bool:
    return protocol.upper() in _SECURE_PROFILES


def value(key: SdesKey) -> str:
    """The attribute's value as :func:`parse` reads it."""
    return f"{key.tag} {key.suite.value} inline:{base64.b64encode(key.key).decode()}"


def new_key(suite: CryptoSuite, tag: int = 1) -> SdesKey:
    """A fresh master key and salt from the OS's CSPRNG (RFC 4568 §8.1)."""
    return SdesKey(tag, suite, secrets.token_bytes(MASTER_KEY_AND_SALT))


def parse(value: str) -> SdesKey:
    """One crypto attribute's value (after ``a=crypto:``); CryptoError says what is wrong.

    Read here from the raw line, every session parameter included: sdp-transform
    keeps only the first, and a parameter we do not do (UNENCRYPTED_SRTP after
    a WSH=) must refuse the attribute, not be dropped unseen (RFC 4568 §6.3).
    """
    fields = value.strip().split()
    if len(fields) < 3:
        raise CryptoError(f"crypto attribute {value.strip()!r} is not 'tag suite key-params'")
    tag, suite_name, key_params, *session_params = fields
    if not _TAG.match(tag):
        raise CryptoError(f"crypto tag {tag!r} is not 1 to 9 digits")
    try:
        suite = CryptoSuite(suite_name)
    except ValueError:
        raise CryptoError(f"crypto suite {suite_name!r} is not supported (we take "
                          f"{', '.join(s.value for s in CryptoSuite)})") from None
    _check_session_params(session_params)
    return SdesKey(int(tag), suite, _inline_key(key_params))


def choose(values: list[str]) -> SdesKey:
    """The first attribute we can honour, in the offerer's order (RFC 4568 §7.1.1)."""
    reasons: list[str] = []
    for value in values:
        try:
            return parse(value)
        except CryptoError as error:
            reasons.append(str(error))
    if not reasons:
        raise CryptoError("RTP/SAVP offered without any a=crypto attribute (SDES, RFC 4568)")
    raise CryptoError("no usable a=crypto: " + "; ".join(dict.fromkeys(reasons)))


def _inline_key(key_params: str) -> bytes:
    if ";" in key_params:
        raise CryptoError("several keys in one crypto attribute need MKI, which we do not do")
    method, _, value = key_params.partition(":")
    if method != "inline":
        raise CryptoError(f"key method {method!r} is not supported (only inline)")
    encoded, *extras = value.split("|")
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise CryptoError("the crypto key is not valid base64") from None
    if len(key) != MASTER_KEY_AND_SALT:
        raise CryptoError(f"the crypto key is {len(key)} bytes; AES_CM_128 suites take "
                          f"{MASTER_KEY_AND_SALT} (16-byte key and 14-byte salt)")
    for extra in extras:
        if ":" in extra:
            raise CryptoError("a master key index (MKI) is not supported")
        if not _LIFETIME.match(extra):
            raise CryptoError(f"key lifetime {extra!r} is not 2^n or a number")
    return key


def _check_session_params(params: list[str]) -> None:
    """Session parameters change the transform; one we do not do refuses the attribute."""
    for param in params:
        if _WINDOW_HINT.match(param) or param == "KDR=0":
            continue  # a replay window hint, or the key derivation rate we use anyway
        raise CryptoError(f"crypto session parameter {param!r} is not supported")
