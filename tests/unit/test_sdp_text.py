"""media/sdp_text.py gives what sdp-transform gives, for the lines sdp.py reads and writes."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import sdp_transform
from hypothesis import given, settings
from hypothesis import strategies as st

from warmline.media import sdp, sdp_text
from warmline.media.sdes import CryptoSuite, new_key

SESSION_KEYS = ("version", "connection", "direction", "rtp", "fmtp", "rtcp", "ptime", "rtcpMux")
MEDIA_KEYS = ("type", "port", "protocol", "payloads", *SESSION_KEYS)

SIPP = (b"v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\n"
        b"c=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
BARESIP = (b"v=0\r\no=- 1215 2371 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           b"m=audio 10000 RTP/AVP 9 0 8 101\r\na=rtpmap:9 G722/8000\r\n"
           b"a=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
           b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=rtcp-mux\r\n"
           b"a=sendrecv\r\na=ptime:20\r\nm=video 0 RTP/AVP 96\r\n")
PJSUA = (b"v=0\r\no=- 3917 3917 IN IP4 127.0.0.1\r\ns=pjmedia\r\nb=AS:117\r\nt=0 0\r\n"
         b"a=X-nat:0\r\nm=audio 4000 RTP/SAVP 111 0 96\r\nc=IN IP4 127.0.0.1\r\nb=TIAS:96000\r\n"
         b"a=rtcp:4001 IN IP4 127.0.0.1\r\na=sendonly\r\na=rtpmap:111 opus/48000/2\r\n"
         b"a=fmtp:111 useinbandfec=1\r\na=rtpmap:96 telephone-event/48000\r\n"
         b"a=fmtp:96 0-16\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 "
         b"inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVzcyAoZ|2^20|1:32\r\n"
         b"a=ssrc:123 cname:x\r\n")
ODD = [
    b"v=0\nc=IN IP4 1.2.3.4\na=inactive\nm=audio 5000 RTP/AVP 0 8\na=ptime:0.5\n",
    b"v=0\r\nc=IN IP6 ::1\r\nm=audio 5000/2 RTP/AVP 0\r\na=rtpmap: PCMU/8000\r\n",
    b"v=\r\nm=audio 5000 RTP/AVP 0\r\na=fmtp:101\r\na=fmtp:101 30\r\na=ptime:1.2.3\r\n",
    "v=0\r\n  c=IN IP4 9.9.9.9\r\nm=audio \u0665\u0660\u0660\u0660 RTP/AVP 0\r\n".encode(),
    b"v=0\r\nm=audio 7000 RTP/AVP 0 8\r\nc=IN IP4 1.1.1.1\r\nc=IN IP4 2.2.2.2\r\n"
    b"a=rtcp:\r\na=rtcp:7001\r\na=rtcp-muxy\r\na=sendrecvx\r\na=recvonly\r\n"
    b"a=rtpmap:8 PCMA\r\na=rtpmap:0 PCMU / 8000 / 1\r\na=maxptime:40\r\n",
    b"x=1\r\nV=0\r\nv=0\r\nm=\r\nm=audio\r\nm=text 9 TCP/MSRP *\r\n",
    b"",
]


def projected(session: dict[str, Any]) -> dict[str, Any]:
    """sdp-transform's result cut to the keys sdp_text reads."""
    kept = {key: session[key] for key in SESSION_KEYS if key in session}
    kept["media"] = [{key: media[key] for key in MEDIA_KEYS if key in media}
                     for media in session["media"]]
    return kept


@pytest.mark.parametrize("text", [SIPP, BARESIP, PJSUA, *ODD])
def test_parse_gives_what_sdp_transform_gives(text: bytes) -> None:
    decoded = text.decode()
    assert sdp_text.parse(decoded) == projected(sdp_transform.parse(decoded))


LINES = st.sampled_from([
    "v=0", "v=1", "c=IN IP4 10.0.0.1", "c=IN IP6 ::2", "c=IN IP4", "m=audio 5004 RTP/AVP 0 8 101",
    "m=audio 0 RTP/SAVP 9", "m=video 6000 RTP/AVP 96", "a=rtpmap:0 PCMU/8000",
    "a=rtpmap:101 telephone-event/8000", "a=rtpmap:111 opus/48000/2", "a=fmtp:101 0-16",
    "a=fmtp:111 minptime=10; useinbandfec=1", "a=ptime:20", "a=ptime:", "a=sendonly",
    "a=inactive", "a=rtcp-mux", "a=rtcp:5005 IN IP4 10.0.0.1", "a=rtcp:5005", "o=- 1 2 IN IP4 h",
    "s=-", "t=0 0", "b=AS:64",
])
NOISE = st.text(alphabet="av=cm:/ 0123456789.-PCMUrtpmaxsendrecvonlyIN IP4\t", max_size=30)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(LINES, NOISE, LINES.map(lambda line: line[:-1])), max_size=14),
       st.sampled_from(["\r\n", "\n"]))
def test_parse_matches_on_any_mix_of_lines(lines: list[str], ending: str) -> None:
    text = ending.join(lines)
    assert sdp_text.parse(text) == projected(sdp_transform.parse(text))


def sections() -> list[list[dict[str, Any]]]:
    """Media sections as sdp.py builds them: offers, answers, rejections, crypto, rtcp-mux."""
    pcmu, opus = sdp.CODECS["pcmu"], sdp.CODECS["opus"]
    plain = sdp._media_section(4000, [(0, pcmu), (101, sdp.TELEPHONE_EVENT)], "sendrecv", 20)
    secure = sdp._media_section(4002, [(111, opus), (96, sdp.telephone_event(48000))],
                                "sendonly", 40, protocol="RTP/SAVP")
    secure["crypto"] = [new_key(CryptoSuite.AES_CM_128_HMAC_SHA1_80).attribute()]
    secure["rtcpMux"] = "rtcp-mux"
    rejected = sdp._rejected({"type": "video", "port": 5000, "protocol": "RTP/AVP",
                              "payloads": "96 97"})
    empty = sdp._rejected({})
    return [[plain], [secure], [rejected, plain], [empty, secure, rejected]]


@pytest.mark.parametrize("media", sections())
@pytest.mark.parametrize("address", ["127.0.0.1", "::1"])
def test_write_gives_what_sdp_transform_writes(media: list[dict[str, Any]],
                                               address: str) -> None:
    session = sdp.session_dict(address, 123456789, 42, media)
    expected = sdp_transform.write(copy.deepcopy(session))
    assert sdp_text.write(session) == expected


def test_an_offer_reads_back_as_the_stream_it_describes() -> None:
    offer = sdp.offer("127.0.0.1", 4000, ["pcmu", "opus"], session_id=1, version=2)
    stream = sdp.read_answer(offer)
    assert (stream.codec.key, stream.remote_port, stream.dtmf_payload_type) == ("pcmu", 4000, 97)


@pytest.mark.parametrize("ptime,expected", [("20", 20), ("0.5", 30), ("1.2.3", 30), ("999", 30),
                                            ("30.7", 30), ("10", 10)])
def test_an_unusable_ptime_falls_back_rather_than_failing(ptime: str, expected: int) -> None:
    offer = SIPP + f"a=ptime:{ptime}\r\n".encode()
    _, stream = sdp.answer(offer, "127.0.0.1", 4000, ["pcmu"], session_id=1, version=1,
                           ptime=30)
    assert stream.ptime == expected


def test_rtpmap_and_fmtp_without_payload_numbers_are_refused_cleanly() -> None:
    offer = SIPP.replace(b"a=rtpmap:0 PCMU/8000", b"a=rtpmap: PCMU/8000\r\na=fmtp: x=1")
    _, stream = sdp.answer(offer, "127.0.0.1", 4000, ["pcmu"], session_id=1, version=1)
    assert stream.codec.key == "pcmu"  # payload 0 is PCMU statically


def test_a_payload_number_too_long_to_read_is_a_400_not_a_crash() -> None:
    offer = SIPP.replace(b"RTP/AVP 0", b"RTP/AVP 0 " + b"1" * 4301)
    with pytest.raises(sdp.SdpError) as refused:
        sdp.answer(offer, "127.0.0.1", 4000, ["pcmu"], session_id=1, version=1)
    assert refused.value.status == 400


def test_write_refuses_a_key_it_has_no_line_for() -> None:
    section = sdp._media_section(4000, [(0, sdp.CODECS["pcmu"])], "sendrecv", 20)
    section["maxptime"] = 40
    with pytest.raises(ValueError, match="maxptime"):
        sdp_text.write(sdp.session_dict("127.0.0.1", 1, 1, [section]))
    rejected = {"type": "audio", "port": 0, "protocol": "RTP/AVP", "payloads": None}
    session = sdp.session_dict("127.0.0.1", 1, 1, [rejected])
    assert sdp_text.write(session) == sdp_transform.write(copy.deepcopy(session))
