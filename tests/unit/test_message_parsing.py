"""Parser tests: the RFC 4475 torture corpus plus targeted round-trips."""

from __future__ import annotations

import pytest

from tests.unit.torture import INVALID, VALID, Torture
from warmline.sip.errors import MessageTooLarge, SipParseError
from warmline.sip.message import (
    Request,
    Response,
    StreamFramer,
    parse_message,
    validate_request,
    validate_response,
)
from warmline.sip.uri import AbsoluteUri, SipUri


def parse_and_validate(data: bytes) -> Request | Response:
    message = parse_message(data)
    if isinstance(message, Request):
        validate_request(message)
    else:
        validate_response(message)
    return message


@pytest.mark.parametrize("case", VALID, ids=lambda c: c.name)
def test_valid_torture_messages_parse(case: Torture) -> None:
    message = parse_and_validate(case.data)
    again = parse_and_validate(message.to_bytes())
    assert again.call_id == message.call_id
    assert again.cseq == message.cseq
    assert again.body == message.body


@pytest.mark.parametrize("case", INVALID, ids=lambda c: c.name)
def test_invalid_torture_messages_are_rejected(case: Torture) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_and_validate(case.data)
    if case.status is not None:
        assert caught.value.status == case.status
    assert caught.value.reason


def by_name(name: str) -> Request | Response:
    return parse_and_validate(next(c for c in VALID if c.name == name).data)


def test_wsinv_folded_fields_read_correctly() -> None:
    request = by_name("wsinv")
    assert isinstance(request, Request)
    assert request.max_forwards == 68
    assert request.cseq.seq == 9 and request.cseq.method == "INVITE"
    assert request.to.tag == "1918181833n"
    assert request.from_.display_name == 'J Rosenberg \\"'
    assert request.from_.tag == "98asjd8"
    assert [v.transport for v in request.vias] == ["UDP", "TCP", "UDP"]
    assert request.vias[1].branch == "z9hG4bK9ikj8"
    assert request.vias[2].host == "192.168.255.111"
    assert request.contact is not None and request.contact.param("q") == "0.33"
    assert len(request.body) == 150
    assert request.get("Subject") == ""


def test_intmeth_user_part_may_hold_question_marks() -> None:
    request = by_name("intmeth")
    assert isinstance(request, Request) and isinstance(request.uri, SipUri)
    assert request.uri.host == "example.com"
    assert request.uri.user is not None and request.uri.user.startswith("1_unusual.URI~")
    assert request.method == request.cseq.method


def test_escapes_and_compact_forms() -> None:
    request = by_name("esc01")
    assert isinstance(request, Request) and isinstance(request.uri, SipUri)
    assert request.uri.user_decoded == "sips:user@example.com"
    assert request.content_type == "application/sdp"
    assert request.to.sip_uri.user_decoded == "user"


def test_escaped_header_name_is_not_contact() -> None:
    request = by_name("esc02")
    assert len(request.contacts) == 2
    assert request.get("C%6Fntact") == "<sip:alias2@host2.example.com>"


def test_list_headers_split_but_from_does_not() -> None:
    request = by_name("semiuri")
    assert "message/sipfrag" in request.values("accept")
    assert isinstance(request, Request) and isinstance(request.uri, SipUri)
    assert request.uri.user == "user;par=u%40example.net"


def test_novel_scheme_is_kept_opaque() -> None:
    request = by_name("mismatch-unknown-scheme")
    assert isinstance(request, Request) and isinstance(request.uri, AbsoluteUri)


def test_ipv6_hosts() -> None:
    request = by_name("ipv6")
    assert isinstance(request, Request) and isinstance(request.uri, SipUri)
    assert request.uri.host == "[2001:db8::10]" and request.uri.bare_host == "2001:db8::10"
    assert request.top_via.host == "[2001:db8::9:1]"


def test_double_request_in_one_datagram_takes_the_first() -> None:
    first = (
        b"REGISTER sip:example.com SIP/2.0\r\nTo: sip:j.user@example.com\r\n"
        b"From: sip:j.user@example.com;tag=43251j3j324\r\nMax-Forwards: 8\r\n"
        b"I: dblreq.0ha0isndaksdj99sdfafnl3lk233412\r\nContact: sip:j.user@host.example.com\r\n"
        b"CSeq: 8 REGISTER\r\nVia: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492\r\n"
        b"Content-Length: 0\r\n\r\n"
    )
    second = b"INVITE sip:joe@example.com SIP/2.0\r\nt: sip:joe@example.com\r\n\r\n"
    message = parse_and_validate(first + second)
    assert isinstance(message, Request) and message.method == "REGISTER"
    assert message.body == b""


def test_bare_lf_line_endings_are_tolerated() -> None:
    data = (
        b"OPTIONS sip:a@b SIP/2.0\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\nTo: <sip:a@b>\n"
        b"From: <sip:c@d>;tag=1\nCall-ID: x\nCSeq: 1 OPTIONS\nContent-Length: 0\n\n"
    )
    assert parse_and_validate(data).call_id == "x"


def test_oversized_datagram_is_513() -> None:
    with pytest.raises(MessageTooLarge) as caught:
        parse_message(b"x" * 2000, max_size=1000)
    assert caught.value.status == 513


def test_stream_framer_cuts_and_rejoins() -> None:
    one = next(c for c in VALID if c.name == "lwsdisp").data
    two = next(c for c in VALID if c.name == "esc01").data
    framer = StreamFramer()
    stream = b"\r\n\r\n" + one + two
    received: list[bytes] = []
    for index in range(0, len(stream), 7):
        received += framer.feed(stream[index : index + 7])
    assert received == [one, two]


def test_stream_framer_limits_size_and_requires_length() -> None:
    with pytest.raises(MessageTooLarge):
        StreamFramer(max_size=100).feed(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 500\r\n\r\n")
    with pytest.raises(SipParseError):
        StreamFramer().feed(b"OPTIONS sip:a SIP/2.0\r\nTo: x\r\n\r\n")


def test_serialized_content_length_always_matches_body() -> None:
    response = Response(200, headers=[("Content-Length", "99"), ("Call-ID", "c")], body=b"abc")
    data = response.to_bytes()
    assert data.count(b"Content-Length") == 1 and data.endswith(b"Content-Length: 3\r\n\r\nabc")


@pytest.mark.parametrize("digits", ["\u00b2", "\uff16\uff10", "\u0667"])
def test_non_ascii_digits_are_not_numbers(digits: str) -> None:
    lwsdisp = next(c for c in VALID if c.name == "lwsdisp").data
    for old, new in ((b"CSeq: 60", f"CSeq: {digits}"), (b"l: 0", f"l: {digits}"),
                     (b"Max-Forwards: 70", f"Max-Forwards: {digits}")):
        with pytest.raises(SipParseError):
            parse_and_validate(lwsdisp.replace(old, new.encode()))
