"""Bad input never crashes the core: mutated torture messages and random bytes.

The UA core must answer or drop anything (a 4xx, or a counted drop), never raise.
"""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.unit.torture import INVALID, VALID
from warmline.sip.errors import SipParseError
from warmline.sip.events import Target
from warmline.sip.message import Request, parse_message, validate_request, validate_response
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


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_messages_are_answered_or_dropped_never_raised(data: bytes) -> None:
    agent = fresh_agent()
    agent.receive(data, SOURCE, 0.0)
    agent.handle_timer(100.0)
    for transmit in agent.pop_transmissions():
        reply = parse_message(transmit.data)  # whatever we send must itself parse
        assert reply is not None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_random_bytes_are_dropped(data: bytes) -> None:
    agent = fresh_agent()
    agent.receive(data, SOURCE, 0.0)
    assert agent.counters.received == 1


@settings(max_examples=300, deadline=None)
@given(mutated())
def test_parser_raises_only_its_own_error(data: bytes) -> None:
    with contextlib.suppress(SipParseError):
        message = parse_message(data)
        if isinstance(message, Request):
            validate_request(message)
        else:
            validate_response(message)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80))
def test_uri_parser_raises_only_its_own_error(text: str) -> None:
    with contextlib.suppress(SipParseError):
        parse_uri(text)
