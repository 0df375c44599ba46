"""SDP offer/answer for audio (RFC 3264, RFC 4566).

sdp_text.py turns text into dicts and back (the dicts of the sdp-transform
library, which it replaces on this path); warmline owns the negotiation:
PCMU, PCMA, G.722, Opus and telephone-event (RFC 4733), ptime, hold directions,
rejected streams (port 0) kept in place, RTP/SAVP with SDES keys (RFC 4568,
sdes.py) as the SRTP policy allows, and an explicit error carrying the SIP
status to answer (400 for SDP that does not parse, 488 when nothing fits, with
the reason: the profile or crypto attribute refused, or the codecs offered).
The SIP-only answerer has a leaner G.711-only reader still (basic_sdp.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from warmline.media import sdes, sdp_text
from warmline.media.sdes import CryptoError, CryptoSuite, SdesKey, SrtpKeys, SrtpPolicy
from warmline.sip.uri import is_ip_address


@dataclass(frozen=True, slots=True)
class Codec:
    name: str  # as in rtpmap, compared case-insensitively
    clock_rate: int  # the RTP clock (G.722's is 8000 by RFC 3551's famous erratum)
    channels: int = 1
    static_payload: int | None = None
    fmtp: str | None = None

    @property
    def key(self) -> str:
        return self.name.lower()


CODECS = {
    "pcmu": Codec("PCMU", 8000, static_payload=0),
    "pcma": Codec("PCMA", 8000, static_payload=8),
    "g722": Codec("G722", 8000, static_payload=9),
    "opus": Codec("opus", 48000, channels=2, fmtp="minptime=10;useinbandfec=1"),
}
TELEPHONE_EVENT = Codec("telephone-event", 8000, fmtp="0-16")
DTMF_RATES = (8000, 16000, 48000)  # telephone-event clocks we read (RFC 4733 §2.1)


def telephone_event(clock_rate: int) -> Codec:
    """RFC 4733 events on ``clock_rate``: the audio codec's clock, as §2.1 asks."""
    return Codec("telephone-event", clock_rate, fmtp="0-16")
_STATIC_NAMES = {codec.static_payload: codec for codec in CODECS.values()}
# Our direction given theirs: what they only send, we only receive (RFC 3264 §6.1).
_MIRROR = {"sendrecv": "sendrecv", "sendonly": "recvonly", "recvonly": "sendonly",
           "inactive": "inactive"}


class SdpError(ValueError):
    """An offer or answer that cannot be used; ``status`` is the SIP response to send."""

    def __init__(self, reason: str, status: int = 488) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True, slots=True)
class AudioStream:
    """What was agreed for the audio stream, from our side's point of view."""

    payload_type: int
    codec: Codec
    dtmf_payload_type: int | None
    ptime: int
    remote_address: str
    remote_port: int
    direction: str  # ours: sendrecv, sendonly, recvonly or inactive
    remote_fmtp: str | None = None
    rtcp_mux: bool = False  # RTCP shares the RTP port (RFC 5761), both ways
    remote_rtcp_port: int | None = None  # a=rtcp (RFC 3605); None: the RTP port + 1
    dtmf_clock_rate: int = 8000  # the telephone-event's clock (the audio's, when offered)
    srtp: SrtpKeys | None = None  # RTP/SAVP: the suite and keys; None: plain RTP

    @property
    def rtcp_port(self) -> int:
        """Where the far end takes RTCP."""
        if self.rtcp_mux:
            return self.remote_port
        return self.remote_rtcp_port or self.remote_port + 1


MAX_PORT = 65535
UNSPECIFIED = ("0.0.0.0", "::")  # a c= address of RFC 2543 hold


def parse(text: bytes) -> dict[str, Any]:
    try:
        session = sdp_text.parse(text.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise SdpError(f"unreadable SDP: {error}", 400) from error
    if session.get("version") != 0 or not session.get("media"):
        raise SdpError("SDP without v=0 or without any m= line", 400)
    for media in session["media"]:
        port = media.get("port")
        if not isinstance(port, int) or "payloads" not in media:
            raise SdpError("malformed m= line", 400)
        if port > MAX_PORT:
            raise SdpError(f"m= port {str(port)[:12]} is out of range (0-{MAX_PORT})", 400)
    return session


KeySource = Callable[[CryptoSuite], bytes]  # our master key for a suite (kept per leg)
_PLAIN_PROFILES = ("RTP/AVP", "RTP/AVPF")


def offer(address: str, port: int, codecs: list[str], *, session_id: int, version: int,
          direction: str = "sendrecv", ptime: int = 20, dtmf: bool = True,
          crypto: Sequence[SdesKey] = ()) -> bytes:
    """An audio offer listing ``codecs`` in order of preference (put the caller's first).

    With ``crypto`` the stream is RTP/SAVP and lists those keys in that order.
    """
    chosen = [_known(name) for name in codecs]
    next_dynamic = iter(range(96, 128))
    formats = [(codec.static_payload if codec.static_payload is not None else next(next_dynamic),
                codec) for codec in chosen]
    if dtmf:  # one per audio clock: opus/48000 is paired with telephone-event/48000
        for rate in dict.fromkeys(codec.clock_rate for codec in chosen):
            formats.append((next(next_dynamic), telephone_event(rate)))
    media = _media_section(port, formats, direction, ptime,
                           protocol="RTP/SAVP" if crypto else "RTP/AVP")
    if crypto:
        media["crypto"] = [key.attribute() for key in crypto]
    return _write(address, session_id, version, [media])


def answer(offer_text: bytes, address: str, port: int, supported: list[str], *,
           session_id: int, version: int, ptime: int = 20,
           keep: str | None = None, srtp: SrtpPolicy = SrtpPolicy.ACCEPT,
           key_for: KeySource | None = None) -> tuple[bytes, AudioStream]:
    """Answer the first usable audio stream; every other stream is refused with port 0.

    The offerer's order decides, except that ``keep`` (the codec of a stream
    being renegotiated) wins while it is still offered (RFC 3264 §8.3.2). An
    RTP/SAVP stream is answered with the offer's first usable crypto attribute
    and our key for its suite from ``key_for``, as ``srtp`` allows.
    """
    session = parse(offer_text)
    crypto_values = _crypto_values(offer_text)
    wanted = [_known(name).key for name in supported]
    answered: list[dict[str, Any]] = []
    refusals: list[str] = []
    agreed: AudioStream | None = None
    for index, media in enumerate(session["media"]):
        if agreed is not None or media.get("type") != "audio" or not media["port"]:
            answered.append(_rejected(media))
            continue
        try:
            crypto = _transport(media, srtp, crypto_values[index])
        except CryptoError as error:
            refusals.append(str(error))
            answered.append(_rejected(media))
            continue
        pick = (keep is not None and _pick(media, [keep.lower()])) or _pick(media, wanted)
        if pick is None:
            answered.append(_rejected(media))
            continue
        keys = None if crypto is None else SrtpKeys(
            crypto.suite, _our_key(key_for, crypto.suite), crypto.key)
        agreed = _agreed(session, media, pick, ptime, keys)
        answered.append(_answer_section(media, port, pick, agreed, crypto))
    if agreed is None:
        if refusals:
            raise SdpError("; ".join(dict.fromkeys(refusals)))
        offered = ", ".join(_offered_names(session)) or "nothing"
        raise SdpError(f"no common codec (offered {offered}; we take {', '.join(supported)})")
    return _write(address, session_id, version, answered), agreed


def _crypto_values(text: bytes) -> list[list[str]]:
    """Each m= section's ``a=crypto`` values, whole (sdp-transform drops all session
    parameters but the first, and RFC 4568 §6.3 needs to see every one)."""
    sections: list[list[str]] = []
    for raw in text.decode("utf-8", "replace").splitlines():
        line = raw.strip()
        if line.startswith("m="):
            sections.append([])
        elif line.startswith("a=crypto:") and sections:
            sections[-1].append(line.removeprefix("a=crypto:"))
    return sections


def _transport(media: dict[str, Any], srtp: SrtpPolicy,
               crypto_values: list[str]) -> SdesKey | None:
    """The offered crypto attribute we take, None for plain RTP; CryptoError says why not."""
    protocol = str(media.get("protocol", ""))
    if protocol.upper() in _PLAIN_PROFILES:
        if srtp is SrtpPolicy.REQUIRE:
            raise CryptoError(f"media profile {protocol} refused: SRTP is required "
                              f"(RTP/SAVP with a=crypto)")
        return None
    if not sdes.is_secure_profile(protocol):
        raise CryptoError(f"media profile {protocol} is not supported "
                          f"(we take RTP/AVP, and RTP/SAVP with a=crypto)")
    if srtp is SrtpPolicy.OFF:
        raise CryptoError(f"media profile {protocol} refused: SRTP is turned off")
    try:
        return sdes.choose(crypto_values)
    except CryptoError as error:
        raise CryptoError(f"{protocol}: {error}") from None


def _our_key(key_for: KeySource | None, suite: CryptoSuite) -> bytes:
    return key_for(suite) if key_for is not None else sdes.new_key(suite).key


def _agreed(session: dict[str, Any], media: dict[str, Any], pick: tuple[int, Codec, int | None],
            ptime: int, keys: SrtpKeys | None) -> AudioStream:
    payload, codec, dtmf = pick
    dtmf_codec = _payload_names(media).get(dtmf) if dtmf is not None else None
    return AudioStream(
        payload, codec, dtmf, _ptime(media, ptime),
        _remote_address(session, media), int(media["port"]),
        _MIRROR[_direction(session, media)], _fmtp(media, payload), "rtcpMux" in media,
        _rtcp_port(media), dtmf_codec.clock_rate if dtmf_codec else 8000, keys)


def _answer_section(media: dict[str, Any], port: int, pick: tuple[int, Codec, int | None],
                    agreed: AudioStream, crypto: SdesKey | None) -> dict[str, Any]:
    payload, codec, dtmf = pick
    formats = [(payload, codec)]
    dtmf_codec = _payload_names(media).get(dtmf) if dtmf is not None else None
    if dtmf is not None and dtmf_codec is not None:
        formats.append((dtmf, dtmf_codec))
    section = _media_section(port, formats, agreed.direction, agreed.ptime,
                             protocol=media.get("protocol", "RTP/AVP"))
    if agreed.rtcp_mux:
        section["rtcpMux"] = "rtcp-mux"  # we demultiplex by packet type anyway
    if crypto is not None and agreed.srtp is not None:  # same tag and suite, our key
        section["crypto"] = [SdesKey(crypto.tag, crypto.suite, agreed.srtp.local).attribute()]
    return section


def read_answer(answer_text: bytes, offered: Sequence[SdesKey] = ()) -> AudioStream:
    """What the far end accepted in its answer to our offer (``offered``: our crypto keys)."""
    session = parse(answer_text)
    crypto_values = _crypto_values(answer_text)
    for index, media in enumerate(session["media"]):
        if media.get("type") != "audio" or not media["port"]:
            continue
        payloads = _payload_list(media)
        names = _payload_names(media)
        for payload in payloads:
            codec = names.get(payload)
            if codec is not None and codec.key in CODECS:
                dtmf = _dtmf(payloads, names, codec.clock_rate)
                return AudioStream(payload, codec, dtmf,
                                   _ptime(media, 20),
                                   _remote_address(session, media), int(media["port"]),
                                   _MIRROR[_direction(session, media)], _fmtp(media, payload),
                                   remote_rtcp_port=_rtcp_port(media),
                                   dtmf_clock_rate=names[dtmf].clock_rate
                                   if dtmf is not None else 8000,
                                   srtp=_answered_keys(media, crypto_values[index],
                                                       offered))
    raise SdpError("the answer accepted no audio codec we offered")


def _answered_keys(media: dict[str, Any], crypto_values: list[str],
                   offered: Sequence[SdesKey]) -> SrtpKeys | None:
    """The keys of an answer to our RTP/SAVP offer: one of our tags, same suite, their key."""
    protocol = str(media.get("protocol", ""))
    if not offered:
        if sdes.is_secure_profile(protocol):
            raise SdpError(f"the answer uses {protocol}, but we offered RTP/AVP")
        return None
    if not sdes.is_secure_profile(protocol):
        raise SdpError(f"the answer uses {protocol}, but we offered RTP/SAVP (SRTP required)")
    if len(crypto_values) != 1:
        raise SdpError(f"the answer has {len(crypto_values)} a=crypto attributes, not 1")
    try:
        theirs = sdes.parse(crypto_values[0])
    except CryptoError as error:
        raise SdpError(f"the answer's crypto: {error}") from None
    ours = next((key for key in offered if key.tag == theirs.tag), None)
    if ours is None or ours.suite is not theirs.suite:
        raise SdpError(f"the answer's crypto tag {theirs.tag} {theirs.suite.value} "
                       f"is not one we offered")
    return SrtpKeys(theirs.suite, ours.key, theirs.key)


# ---------------------------------------------------------------- helpers
def _known(name: str) -> Codec:
    try:
        return CODECS[name.lower()]
    except KeyError:
        raise SdpError(f"media.codecs: unknown codec {name!r} (known: PCMU, PCMA, G722, opus)",
                       500) from None


def _payload_list(media: dict[str, Any]) -> list[int]:
    items = str(media.get("payloads", "")).split()
    if not all(item.isascii() and item.isdigit() and len(item) <= 3 and int(item) < 128
               for item in items):
        raise SdpError(f"bad payload types in m= line: {media.get('payloads')!r}", 400)
    return [int(item) for item in items]


def _payload_names(media: dict[str, Any]) -> dict[int, Codec]:
    names: dict[int, Codec] = {pt: codec for pt, codec in _STATIC_NAMES.items()
                               if pt is not None}
    for rtp in media.get("rtp", []):
        payload, rate = rtp.get("payload"), rtp.get("rate") or 0
        if not isinstance(payload, int) or not isinstance(rate, int):
            continue  # "a=rtpmap: PCMU/8000", "a=rtpmap:0 PCMU/x": names no payload we take
        name = str(rtp.get("codec", "")).lower()
        base = CODECS.get(name) or (telephone_event(rate) if name == "telephone-event"
                                    and rate in DTMF_RATES else None)
        if base is not None and rate == base.clock_rate:
            names[payload] = base
        else:
            names.pop(payload, None)  # a static number remapped to something else
    return names


def _pick(media: dict[str, Any], wanted: list[str]) -> tuple[int, Codec, int | None] | None:
    payloads = _payload_list(media)
    names = _payload_names(media)
    for payload in payloads:  # the offerer's order of preference (RFC 3264 §6.1)
        codec = names.get(payload)
        if codec is not None and codec.key in wanted:
            return payload, codec, _dtmf(payloads, names, codec.clock_rate)
    return None


def _dtmf(payloads: list[int], names: dict[int, Codec], clock_rate: int) -> int | None:
    """The telephone-event on the audio's clock (RFC 4733 §2.1), else the 8 kHz one."""
    events = [pt for pt in payloads if pt in names and names[pt].key == "telephone-event"]
    for rate in (clock_rate, 8000):
        matching = next((pt for pt in events if names[pt].clock_rate == rate), None)
        if matching is not None:
            return matching
    return events[0] if events else None


def _direction(session: dict[str, Any], media: dict[str, Any]) -> str:
    direction = media.get("direction") or session.get("direction") or "sendrecv"
    if _remote_address(session, media) in UNSPECIFIED:
        return "inactive"  # RFC 2543 style hold
    return str(direction)


def _remote_address(session: dict[str, Any], media: dict[str, Any]) -> str:
    """The audio's c= address: an IP literal, or the offer is refused (488 saying why).

    RFC 4566 allows a host name there, but looking one up would be DNS on the media path,
    at a stranger's word and (through the socket's own lookup) blocking the event loop;
    a multicast group is not a peer a call can be relayed to."""
    connection = media.get("connection") or session.get("connection")
    if not connection or "ip" not in connection:
        raise SdpError("no c= line for the audio stream", 400)
    address = str(connection["ip"])
    group = address.partition("/")[0]  # a multicast group's TTL and count follow a "/"
    if is_ip_address(group) and group not in UNSPECIFIED \
            and ipaddress.ip_address(group).is_multicast:
        raise SdpError(f"c= address {address[:64]} is a multicast group (unicast only)")
    if not is_ip_address(address):
        raise SdpError(f"c= address {address[:64]!r} is not an IP address (warmline does "
                       "not look media hosts up)")
    return address


def _rtcp_port(media: dict[str, Any]) -> int | None:
    rtcp = media.get("rtcp")
    port = rtcp.get("port") if isinstance(rtcp, dict) else None
    return port if isinstance(port, int) and 0 < port < 65536 else None


def _fmtp(media: dict[str, Any], payload: int) -> str | None:
    for item in media.get("fmtp", []):
        if item.get("payload") == payload:
            return str(item.get("config"))
    return None


def _ptime(media: dict[str, Any], default: int) -> int:
    """The a=ptime in whole ms (a fraction cut), else ``default``: when there is none, or
    it is not a number (a=ptime:1.2.3) or not 1-200 ms (a=ptime:0.5 was read as 0 ms)."""
    value = media.get("ptime")
    return int(value) if isinstance(value, int | float) and 1 <= value <= 200 else default


def _offered_names(session: dict[str, Any]) -> list[str]:
    names: list[str] = []
    for media in session["media"]:
        if media.get("type") == "audio" and media.get("port"):
            table = _payload_names(media)
            for payload in _payload_list(media):
                codec = table.get(payload)
                names.append(codec.name if codec else str(payload))
    return names


def _rejected(media: dict[str, Any]) -> dict[str, Any]:
    first = str(media.get("payloads", "0")).split()[:1] or ["0"]
    return {"type": media.get("type", "audio"), "port": 0,
            "protocol": media.get("protocol", "RTP/AVP"), "payloads": first[0]}


def _media_section(port: int, formats: list[tuple[int, Codec]], direction: str, ptime: int,
                   protocol: str = "RTP/AVP") -> dict[str, Any]:
    rtp = [{"payload": pt, "codec": codec.name, "rate": codec.clock_rate,
            **({"encoding": codec.channels} if codec.channels > 1 else {})}
           for pt, codec in formats]
    fmtp = [{"payload": pt, "config": codec.fmtp} for pt, codec in formats if codec.fmtp]
    return {"type": "audio", "port": port, "protocol": protocol,
            "payloads": " ".join(str(pt) for pt, _ in formats), "rtp": rtp, "fmtp": fmtp,
            "ptime": ptime, "direction": direction}


def _write(address: str, session_id: int, version: int, media: list[dict[str, Any]]) -> bytes:
    return sdp_text.write(session_dict(address, session_id, version, media)).encode()


def session_dict(address: str, session_id: int, version: int,
                 media: list[dict[str, Any]]) -> dict[str, Any]:
    """Our session description, as the dict sdp_text writes (and sdp-transform would)."""
    family = 6 if ":" in address else 4
    return {
        "version": 0,
        "origin": {"username": "warmline", "sessionId": session_id,
                   "sessionVersion": version, "netType": "IN", "ipVer": family,
                   "address": address},
        "name": "warmline",
        "connection": {"version": family, "ip": address},
        "timing": {"start": 0, "stop": 0},
        "media": media,
    }
