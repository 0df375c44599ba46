"""Bad input never crashes the core: mutated torture messages and random bytes.

The UA core must answer or drop anything (a 4xx, or a counted drop), never raise.
"""

from __future__ import annotations

import contextlib

from hypothesis import given
from hypothesis import strategies as st

from tests.unit.torture import INVALID, VALID
from warmline.sip.errors import SipParseError
from warmline.sip.events import Target
from warmline.sip.message import (
    Request,
    StreamFramer,
    parse_message,
    validate_request,
    validate_response,
)
from warmline.sip.uri import parse_uri
from warmline.sip.useragent import UserAgent

CORPUS = [case.data for case in VALID + INVALID]
SOURCE = Target("udp", "127.0.0.1", 5999)


def fresh_agent() -> UserAgent:
    agent = UserAgent()
    agent.add_listener("udp", "127.0.0.1", 5070)
    return agent


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(CORPUS)))
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, len(data) - 1))
        action = draw(st.sampled_from(["flip", "delete", "insert", "truncate"]))
        if action == "flip":
            data[position] = draw(st.integers(0, 255))
        elif action == "delete":
            del data[position]
        elif action == "insert":
            data[position:position] = draw(st.sampled_from(
                [b"\r\n", b" ", b";", b",", b"<", b">", b'"', b"\\", b":", b"\x00", b"%",
                 "\u00b2".encode(), "\uff16".encode(), "\u0660".encode(), b"\xff"]))
        else:
            del data[position:]
        if not data:
            break
    return bytes(data)


@given(mutated())
def test_mutated_messages_are_answered_or_dropped_never_raised(data: bytes) -> None:
    agent = fresh_agent()
    agent.receive(data, SOURCE, 0.0)
    agent.handle_timer(100.0)
    for transmit in agent.pop_transmissions():
        reply = parse_message(transmit.data)  # whatever we send must itself parse
        assert reply is not None


@given(st.binary(max_size=600))
def test_random_bytes_are_dropped(data: bytes) -> None:
    agent = fresh_agent()
    agent.receive(data, SOURCE, 0.0)
    assert agent.counters.received == 1


@given(mutated())
def test_parser_raises_only_its_own_error(data: bytes) -> None:
    with contextlib.suppress(SipParseError):
        message = parse_message(data)
        if isinstance(message, Request):
            validate_request(message)
        else:
            validate_response(message)


@given(st.text(max_size=80))
def test_uri_parser_raises_only_its_own_error(text: str) -> None:
    with contextlib.suppress(SipParseError):
        parse_uri(text)


OK_FOR_INVITE = (
    "SIP/2.0 200 OK\r\nVia: {via}\r\nFrom: {from_}\r\nTo: <sip:bob@127.0.0.2>;tag=b1\r\n"
    "Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@127.0.0.2:5080>\r\n"
    "Record-Route: <sip:proxy@127.0.0.3;lr>\r\nContent-Type: application/sdp\r\n"
    "Content-Length: 4\r\n\r\nv=0\n"
)


@given(st.data())
def test_mutated_answers_to_our_invite_never_raise(data: st.DataObject) -> None:
    agent = fresh_agent()
    agent.invite("sip:bob@127.0.0.2:5080", 0.0, sdp=b"v=0\r\n")
    invite = parse_message(agent.pop_transmissions()[0].data)
    answer = OK_FOR_INVITE.format(via=invite.get("via"), from_=invite.get("from"),
                                  call_id=invite.call_id).encode()
    answers = [answer, answer.replace(b"Contact: <sip:bob@127.0.0.2:5080>\r\n", b""),
                         answer.replace(b"<sip:bob@127.0.0.2:5080>", b"<tel:+123>")]
    base = bytearray(data.draw(st.sampled_from(answers)))
    for _ in range(data.draw(st.integers(0, 4))):
        position = data.draw(st.integers(0, len(base) - 1))
        base[position] = data.draw(st.integers(0, 255))
    agent.receive(bytes(base), Target("udp", "127.0.0.2", 5080), 0.1)
    agent.handle_timer(200.0)
    agent.pop_transmissions()


@given(st.lists(mutated(), min_size=1, max_size=4), st.integers(1, 64))
def test_stream_framer_raises_only_its_own_error(messages: list[bytes], chunk: int) -> None:
    framer = StreamFramer(max_size=4096)
    stream = b"".join(messages)
    with contextlib.suppress(SipParseError):
        for index in range(0, len(stream), chunk):
            for framed in framer.feed(stream[index : index + chunk]):
                assert framed  # every framed message is non-empty
