"""SDP offer/answer tables (RFC 3264) for the media plane."""

from __future__ import annotations

import pytest

from warmline.media import sdp


def make_offer(m_lines: str, connection: str = "c=IN IP4 192.0.2.10\r\n") -> bytes:
    return ("v=0\r\no=peer 7 7 IN IP4 192.0.2.10\r\ns=-\r\n" + connection + "t=0 0\r\n"
            + m_lines).encode()


AUDIO = ("m=audio 49170 RTP/AVP 9 8 0 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:8 PCMA/8000\r\n"
         "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n")


def negotiate(offer: bytes, supported: list[str]) -> tuple[str, sdp.AudioStream]:
    text, stream = sdp.answer(offer, "127.0.0.1", 40000, supported, session_id=5, version=1)
    return text.decode(), stream


@pytest.mark.parametrize(("supported", "expected_pt", "expected_codec"), [
    (["PCMU", "PCMA"], 8, "PCMA"),  # the offerer's order wins over ours
    (["PCMU", "PCMA", "G722"], 9, "G722"),
    (["PCMU"], 0, "PCMU"),
])
def test_first_offered_codec_we_support_is_chosen(supported: list[str], expected_pt: int,
                                                  expected_codec: str) -> None:
    text, stream = negotiate(make_offer(AUDIO), supported)
    assert stream.payload_type == expected_pt and stream.codec.name == expected_codec
    assert stream.dtmf_payload_type == 101
    assert f"m=audio 40000 RTP/AVP {expected_pt} 101" in text
    assert "a=fmtp:101 0-16" in text
    assert (stream.remote_address, stream.remote_port) == ("192.0.2.10", 49170)


def test_no_common_codec_is_488_naming_what_was_offered() -> None:
    offer = make_offer("m=audio 49170 RTP/AVP 18\r\na=rtpmap:18 G729/8000\r\n")
    with pytest.raises(sdp.SdpError) as caught:
        negotiate(offer, ["PCMU", "PCMA"])
    assert caught.value.status == 488 and "18" in caught.value.reason


@pytest.mark.parametrize("offer", [
    b"\xff\xfe not sdp",
    b"v=0\r\no=x 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\n",  # no m= line
    make_offer("m=audio 49170 RTP/AVP 0\r\n", connection=""),  # no c= anywhere
    make_offer("m=audio 49170 RTP/AVP zero\r\n"),
])
def test_malformed_sdp_is_400(offer: bytes) -> None:
    with pytest.raises(sdp.SdpError) as caught:
        negotiate(offer, ["PCMU"])
    assert caught.value.status == 400


def test_a_port_past_65535_is_400() -> None:
    with pytest.raises(sdp.SdpError) as caught:
        negotiate(make_offer("m=audio 99999999 RTP/AVP 0\r\n"), ["PCMU"])
    assert caught.value.status == 400 and "out of range" in caught.value.reason


@pytest.mark.parametrize(("connection", "why"), [
    ("c=IN IP4 media.pbx.example\r\n", "not an IP address"),  # no DNS on the media path
    ("c=IN IP4 0\r\n", "not an IP address"),
    ("c=IN IP4 224.2.1.1/127\r\n", "multicast"),
    ("c=IN IP6 ff0e::101\r\n", "multicast"),
])
def test_a_media_address_that_is_no_unicast_ip_is_488(connection: str, why: str) -> None:
    with pytest.raises(sdp.SdpError) as caught:
        negotiate(make_offer(AUDIO, connection), ["PCMA"])
    assert caught.value.status == 488 and why in caught.value.reason


def test_an_ipv6_media_address_is_taken() -> None:
    _, stream = negotiate(make_offer(AUDIO, "c=IN IP6 2001:db8::7\r\n"), ["PCMA"])
    assert stream.remote_address == "2001:db8::7"


@pytest.mark.parametrize(("offered", "answered"), [
    ("a=sendonly\r\n", "recvonly"), ("a=recvonly\r\n", "sendonly"),
    ("a=inactive\r\n", "inactive"), ("", "sendrecv"),
])
def test_hold_directions_are_mirrored(offered: str, answered: str) -> None:
    text, stream = negotiate(make_offer(AUDIO + offered), ["PCMA"])
    assert stream.direction == answered and f"a={answered}" in text


def test_rfc2543_hold_address_means_inactive() -> None:
    _, stream = negotiate(make_offer(AUDIO, "c=IN IP4 0.0.0.0\r\n"), ["PCMA"])
    assert stream.direction == "inactive"


def test_other_streams_are_refused_in_place() -> None:
    offer = make_offer("m=video 51372 RTP/AVP 31\r\n" + AUDIO
                       + "m=audio 49180 RTP/AVP 0\r\n")
    text, stream = negotiate(offer, ["PCMA"])
    m_lines = [line for line in text.split("\r\n") if line.startswith("m=")]
    assert m_lines == ["m=video 0 RTP/AVP 31", "m=audio 40000 RTP/AVP 8 101",
                       "m=audio 0 RTP/AVP 0"]
    assert stream.remote_port == 49170


def test_a_refused_offered_stream_is_skipped() -> None:
    offer = make_offer("m=audio 0 RTP/AVP 0\r\nm=audio 49180 RTP/AVP 0\r\n")
    text, stream = negotiate(offer, ["PCMU"])
    assert stream.remote_port == 49180
    assert text.count("m=audio 0 RTP/AVP 0") == 1


def test_a_static_number_remapped_to_another_codec_is_not_that_codec() -> None:
    offer = make_offer("m=audio 49170 RTP/AVP 0\r\na=rtpmap:0 G729/8000\r\n")
    with pytest.raises(sdp.SdpError):
        negotiate(offer, ["PCMU"])


def test_opus_matches_by_name_and_clock() -> None:
    offer = make_offer("m=audio 49170 RTP/AVP 111 0\r\na=rtpmap:111 opus/48000/2\r\n"
                       "a=fmtp:111 minptime=10;useinbandfec=1\r\n")
    text, stream = negotiate(offer, ["opus", "PCMU"])
    assert stream.payload_type == 111 and stream.codec.clock_rate == 48000
    assert stream.remote_fmtp == "minptime=10;useinbandfec=1"
    assert "a=rtpmap:111 opus/48000/2" in text


def test_offer_puts_the_callers_codec_first_and_reads_the_answer_back() -> None:
    offer = sdp.offer("127.0.0.1", 4000, ["PCMA", "PCMU", "G722", "opus"], session_id=1,
                      version=1, direction="sendonly")
    assert "m=audio 4000 RTP/AVP 8 0 9 96 97" in offer.decode()
    answer_text, _ = sdp.answer(offer, "127.0.0.2", 5000, ["PCMU", "PCMA"], session_id=2,
                                version=1)
    stream = sdp.read_answer(answer_text)
    assert stream.codec.name == "PCMA" and stream.direction == "sendonly"
    assert (stream.remote_address, stream.remote_port) == ("127.0.0.2", 5000)


def test_unknown_codec_in_our_config_names_the_key() -> None:
    with pytest.raises(sdp.SdpError, match=r"media\.codecs"):
        sdp.offer("127.0.0.1", 4000, ["speex"], session_id=1, version=1)


def test_telephone_event_runs_on_the_audio_codec_s_clock() -> None:
    """RFC 4733 §2.1: opus/48000 goes with telephone-event/48000 (liblinphone checks it)."""
    from warmline.media import sdp

    ours = sdp.offer("127.0.0.1", 4000, ["opus", "PCMU"], session_id=1, version=1).decode()
    assert "telephone-event/48000" in ours and "telephone-event/8000" in ours
    offered = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
               b"m=audio 5000 RTP/AVP 111 101 102\r\na=rtpmap:111 opus/48000/2\r\n"
               b"a=rtpmap:101 telephone-event/8000\r\na=rtpmap:102 telephone-event/48000\r\n")
    answer, stream = sdp.answer(offered, "127.0.0.1", 4000, ["opus"], session_id=1, version=1)
    assert stream.dtmf_payload_type == 102 and stream.dtmf_clock_rate == 48000
    assert b"telephone-event/48000" in answer and b"telephone-event/8000" not in answer
    _, stream = sdp.answer(offered.replace(b"111 opus/48000/2", b"0 PCMU/8000")
                           .replace(b"audio 5000 RTP/AVP 111", b"audio 5000 RTP/AVP 0"),
                           "127.0.0.1", 4000, ["PCMU"], session_id=1, version=1)
    assert stream.dtmf_payload_type == 101 and stream.dtmf_clock_rate == 8000
