"""SDES-SRTP (RFC 4568, RFC 3711): crypto attributes read and refused with reasons,
RTP/SAVP answered with our own keys, offered when the policy says, and the
libsrtp transform that protects and checks packets."""

from __future__ import annotations

import base64
import struct

import pytest

from warmline.media import sdes, sdp
from warmline.media.negotiation import Negotiation
from warmline.media.plane import LegAddress
from warmline.media.sdes import CryptoError, CryptoSuite, SdesKey, SrtpKeys, SrtpPolicy
from warmline.media.sdp import AudioStream, SdpError
from warmline.media.srtp import SrtpError, SrtpTransform

KEY = base64.b64encode(bytes(range(30))).decode()
OTHER_KEY = base64.b64encode(bytes(range(100, 130))).decode()


def savp_offer(*crypto: str, protocol: str = "RTP/SAVP") -> bytes:
    lines = "".join(f"a=crypto:{line}\r\n" for line in crypto)
    return (f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio 5000 {protocol} 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
            f"a=rtpmap:101 telephone-event/8000\r\n{lines}").encode()


def answer(offer: bytes, srtp: SrtpPolicy = SrtpPolicy.ACCEPT) -> tuple[bytes, AudioStream]:
    return sdp.answer(offer, "127.0.0.1", 4000, ["PCMU"], session_id=1, version=1, srtp=srtp)


def crypto_lines(text: bytes) -> list[str]:
    return [line.decode() for line in text.split(b"\r\n") if line.startswith(b"a=crypto:")]


# ---------------------------------------------------------------- answering
def test_an_savp_offer_is_answered_with_the_same_tag_and_suite_and_our_own_key() -> None:
    text, stream = answer(savp_offer(f"7 AES_CM_128_HMAC_SHA1_32 inline:{KEY}|2^31"))
    assert b"m=audio 4000 RTP/SAVP 0 101" in text
    [line] = crypto_lines(text)
    tag, suite, inline = line.removeprefix("a=crypto:").split(" ")
    assert (tag, suite) == ("7", "AES_CM_128_HMAC_SHA1_32")
    ours = base64.b64decode(inline.removeprefix("inline:"))
    assert stream.srtp == SrtpKeys(CryptoSuite.AES_CM_128_HMAC_SHA1_32, ours, bytes(range(30)))
    assert len(ours) == 30 and ours != bytes(range(30))


def test_the_first_usable_crypto_attribute_wins_in_the_offerers_order() -> None:
    text, stream = answer(savp_offer(f"1 AES_256_CM_HMAC_SHA1_80 inline:{KEY}",
                                     f"2 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4",
                                     f"3 AES_CM_128_HMAC_SHA1_80 inline:{OTHER_KEY}",
                                     f"4 AES_CM_128_HMAC_SHA1_32 inline:{KEY}"))
    assert crypto_lines(text)[0].startswith("a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:")
    assert stream.srtp is not None and stream.srtp.remote == bytes(range(100, 130))


def test_a_plain_offer_gets_plain_rtp_by_default() -> None:
    text, stream = answer(savp_offer(protocol="RTP/AVP"))
    assert stream.srtp is None and b"RTP/AVP" in text and not crypto_lines(text)


@pytest.mark.parametrize(("crypto", "reason"), [
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{base64.b64encode(bytes(20)).decode()}",
     "the crypto key is 20 bytes; AES_CM_128 suites take 30"),
    (f"1 F8_128_HMAC_SHA1_80 inline:{KEY}", "crypto suite 'F8_128_HMAC_SHA1_80' is not supported"),
    ("1 AES_CM_128_HMAC_SHA1_80 inline:not*base64!", "the crypto key is not valid base64"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^20|1:4", "master key index (MKI)"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} UNENCRYPTED_SRTP",
     "session parameter 'UNENCRYPTED_SRTP'"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY} WSH=64 UNENCRYPTED_SRTP",
     "session parameter 'UNENCRYPTED_SRTP'"),  # sdp-transform keeps only the first
    ("1 AES_CM_128_HMAC_SHA1_80", "is not 'tag suite key-params'"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|forever", "key lifetime 'forever'"),
    (f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY};inline:{KEY}", "several keys"),
    (f"1234567890 AES_CM_128_HMAC_SHA1_80 inline:{KEY}", "not 1 to 9 digits"),
])
def test_a_crypto_attribute_we_cannot_use_gets_488_saying_why(crypto: str, reason: str) -> None:
    with pytest.raises(SdpError) as refused:
        answer(savp_offer(crypto))
    assert refused.value.status == 488
    assert refused.value.reason.startswith("RTP/SAVP: no usable a=crypto")
    assert reason in refused.value.reason


def test_savp_without_crypto_and_profiles_we_do_not_speak_are_refused_by_name() -> None:
    with pytest.raises(SdpError, match="RTP/SAVP offered without any a=crypto"):
        answer(savp_offer())
    with pytest.raises(SdpError, match="media profile UDP/TLS/RTP/SAVPF is not supported"):
        answer(savp_offer(protocol="UDP/TLS/RTP/SAVPF"))


def test_the_policy_refuses_srtp_when_off_and_plain_rtp_when_required() -> None:
    with pytest.raises(SdpError, match="RTP/SAVP refused: SRTP is turned off"):
        answer(savp_offer(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}"), SrtpPolicy.OFF)
    with pytest.raises(SdpError, match="RTP/AVP refused: SRTP is required"):
        answer(savp_offer(protocol="RTP/AVP"), SrtpPolicy.REQUIRE)
    _, stream = answer(savp_offer(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}"), SrtpPolicy.REQUIRE)
    assert stream.srtp is not None


def test_a_plain_stream_after_a_refused_secure_one_is_taken() -> None:
    offer = savp_offer("1 F8_128_HMAC_SHA1_80 inline:" + KEY) + (
        b"m=audio 5002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
    text, stream = answer(offer)
    assert stream.srtp is None and stream.remote_port == 5002
    assert b"m=audio 0 RTP/SAVP" in text and b"m=audio 4000 RTP/AVP 0" in text


# ---------------------------------------------------------------- offering
class _Leg:
    def __init__(self) -> None:
        self.local = LegAddress("127.0.0.1", 4000)
        self.streams: list[AudioStream] = []

    def configure(self, stream: AudioStream) -> None:
        self.streams.append(stream)


def _negotiation(srtp: SrtpPolicy) -> tuple[Negotiation, _Leg]:
    leg = _Leg()
    return Negotiation(leg, "127.0.0.1", ["PCMU"], srtp), leg  # type: ignore[arg-type]


def _their_answer(offer: bytes, crypto: str | None, protocol: str = "RTP/SAVP") -> bytes:
    lines = f"a=crypto:{crypto}\r\n" if crypto else ""
    return (f"v=0\r\no=- 2 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio 6000 {protocol} 0\r\na=rtpmap:0 PCMU/8000\r\n{lines}").encode()


def test_require_offers_savp_with_both_suites_and_reads_the_answer_keys() -> None:
    negotiation, leg = _negotiation(SrtpPolicy.REQUIRE)
    offer = negotiation.offer()
    assert b"m=audio 4000 RTP/SAVP" in offer
    lines = crypto_lines(offer)
    assert [line.split(" ")[:2] for line in lines] == [
        ["a=crypto:1", "AES_CM_128_HMAC_SHA1_80"], ["a=crypto:2", "AES_CM_128_HMAC_SHA1_32"]]
    offered_32 = base64.b64decode(lines[1].split("inline:")[1])
    stream = negotiation.accept(_their_answer(offer, f"2 AES_CM_128_HMAC_SHA1_32 inline:{KEY}"))
    assert stream.srtp == SrtpKeys(CryptoSuite.AES_CM_128_HMAC_SHA1_32, offered_32,
                                   bytes(range(30)))
    assert leg.streams == [stream]
    reoffer = negotiation.offer(hold=True)  # hold: the agreed suite and key, not a new key
    [again] = crypto_lines(reoffer)
    assert again.split(" ")[1] == "AES_CM_128_HMAC_SHA1_32"
    assert base64.b64decode(again.split("inline:")[1]) == offered_32


def test_accept_offers_plain_rtp_and_an_answer_must_keep_the_profile() -> None:
    negotiation, _ = _negotiation(SrtpPolicy.ACCEPT)
    offer = negotiation.offer()
    assert b"RTP/AVP" in offer and not crypto_lines(offer)
    with pytest.raises(SdpError, match="answer uses RTP/SAVP, but we offered RTP/AVP"):
        negotiation.accept(_their_answer(offer, f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}"))
    secure, _ = _negotiation(SrtpPolicy.REQUIRE)
    offer = secure.offer()
    with pytest.raises(SdpError, match="we offered RTP/SAVP"):
        secure.accept(_their_answer(offer, None, "RTP/AVP"))
    with pytest.raises(SdpError, match="tag 3 AES_CM_128_HMAC_SHA1_80 is not one we offered"):
        secure.accept(_their_answer(offer, f"3 AES_CM_128_HMAC_SHA1_80 inline:{KEY}"))
    with pytest.raises(SdpError, match="tag 1 AES_CM_128_HMAC_SHA1_32 is not one we offered"):
        secure.accept(_their_answer(offer, f"1 AES_CM_128_HMAC_SHA1_32 inline:{KEY}"))


def test_a_reoffer_is_answered_with_the_key_already_in_use() -> None:
    negotiation, leg = _negotiation(SrtpPolicy.ACCEPT)
    first = negotiation.answer(savp_offer(f"1 AES_CM_128_HMAC_SHA1_80 inline:{KEY}"))
    second = negotiation.answer(savp_offer(f"1 AES_CM_128_HMAC_SHA1_80 inline:{OTHER_KEY}"))
    assert crypto_lines(first) == crypto_lines(second)
    assert leg.streams[0].srtp is not None and leg.streams[1].srtp is not None
    assert leg.streams[0].srtp.local == leg.streams[1].srtp.local
    assert leg.streams[1].srtp.remote == bytes(range(100, 130))


def test_keys_are_fresh_per_leg() -> None:
    one, _ = _negotiation(SrtpPolicy.REQUIRE)
    two, _ = _negotiation(SrtpPolicy.REQUIRE)
    assert crypto_lines(one.offer()) != crypto_lines(two.offer())
    assert sdes.new_key(CryptoSuite.AES_CM_128_HMAC_SHA1_80) != sdes.new_key(
        CryptoSuite.AES_CM_128_HMAC_SHA1_80)


def test_parse_reads_what_we_write_and_refuses_other_key_methods() -> None:
    with pytest.raises(CryptoError, match="key method 'uri'"):
        sdes.parse("1 AES_CM_128_HMAC_SHA1_80 uri:sip:x")
    key = SdesKey(5, CryptoSuite.AES_CM_128_HMAC_SHA1_80, bytes(30))
    assert sdes.parse(sdes.value(key)) == key
    assert sdes.parse(f"5 AES_CM_128_HMAC_SHA1_80 inline:{KEY}|2^31 WSH=128 KDR=0").tag == 5


# ---------------------------------------------------------------- the transform
def rtp(sequence: int, payload: bytes = b"\xff" * 160, ssrc: int = 0x1234) -> bytes:
    return struct.pack("!BBHII", 0x80, 0, sequence, sequence * 160, ssrc) + payload


def rtcp_receiver_report(ssrc: int = 0x1234) -> bytes:
    return struct.pack("!BBHI", 0x80, 201, 1, ssrc)


@pytest.mark.parametrize("suite", list(CryptoSuite))
def test_the_transform_round_trips_and_refuses_tampering_and_replays(suite: CryptoSuite) -> None:
    a_key, b_key = bytes(range(30)), bytes(range(50, 80))
    alice = SrtpTransform(SrtpKeys(suite, a_key, b_key))
    bob = SrtpTransform(SrtpKeys(suite, b_key, a_key))
    protected = alice.protect(rtp(1))
    tag = 10 if suite is CryptoSuite.AES_CM_128_HMAC_SHA1_80 else 4
    assert len(protected) == len(rtp(1)) + tag and protected[12:] != rtp(1)[12:]
    assert bob.unprotect(protected) == rtp(1)
    with pytest.raises(SrtpError, match="replay"):
        bob.unprotect(protected)
    forged = bytearray(alice.protect(rtp(2)))
    forged[20] ^= 1
    with pytest.raises(SrtpError, match="SRTP packet refused"):
        bob.unprotect(bytes(forged))
    with pytest.raises(SrtpError):
        alice.unprotect(alice.protect(rtp(3)))  # our own key does not open it
    report = rtcp_receiver_report()
    assert bob.unprotect_rtcp(alice.protect_rtcp(report)) == report
    with pytest.raises(SrtpError, match="SRTCP packet refused"):
        bob.unprotect_rtcp(report)


def test_a_far_end_rekey_keeps_our_sending_context_and_its_rollover_counter() -> None:
    """RFC 4568 §7.1.4 / RFC 3711 §3.3.1: only the side whose key changed starts again.
    Our stream wraps its sequence right after the far end rekeys; a fresh sending
    context would restart the rollover counter and the far end would refuse it."""
    suite = CryptoSuite.AES_CM_128_HMAC_SHA1_80
    ours, theirs, their_new = bytes(range(30)), bytes(range(50, 80)), bytes(range(80, 110))
    leg = SrtpTransform(SrtpKeys(suite, ours, theirs))
    phone = SrtpTransform(SrtpKeys(suite, theirs, ours))
    assert phone.unprotect(leg.protect(rtp(65535))) == rtp(65535)
    rekeyed = SrtpTransform(SrtpKeys(suite, ours, their_new), keep_from=leg)
    assert phone.unprotect(rekeyed.protect(rtp(0))) == rtp(0)  # rollover counter 1 kept
    restarted = SrtpTransform(SrtpKeys(suite, ours, their_new))
    with pytest.raises(SrtpError):
        phone.unprotect(restarted.protect(rtp(1)))  # what a rebuilt context would send
    new_phone = SrtpTransform(SrtpKeys(suite, their_new, ours))
    assert rekeyed.unprotect(new_phone.protect(rtp(5))) == rtp(5)  # their new key is used
