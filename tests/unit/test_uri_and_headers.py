"""URI and typed-header tests: the cases other Python SIP stacks get wrong."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from warmline.sip import uri as uri_module
from warmline.sip.errors import SipParseError
from warmline.sip.headers import (
    Replaces,
    parse_auth,
    parse_cseq,
    parse_name_addr,
    parse_replaces,
    parse_subscription_state,
    parse_via,
)
from warmline.sip.uri import SipUri, TelUri, escape, is_ip_address, parse_sip_uri, parse_uri


def test_refer_to_with_replaces_round_trips_byte_for_byte() -> None:
    text = "<sip:b@h?Replaces=call%40h%3Bto-tag%3D1>"
    address = parse_name_addr(text)
    assert address.sip_uri.header("replaces") == "call@h;to-tag=1"
    assert str(address) == text


def test_replaces_header_value_is_typed() -> None:
    value = "12345@192.168.118.3;to-tag=12345;from-tag=54321;early-only"
    replaces = parse_replaces(value)
    assert replaces == Replaces("12345@192.168.118.3", "12345", "54321", early_only=True)
    assert parse_replaces(str(replaces)) == replaces
    with pytest.raises(SipParseError):
        parse_replaces("only-a-call-id")


def test_transport_parameter_is_case_insensitive() -> None:
    uri = parse_sip_uri("sip:alice@Atlanta.COM:5070;TRANSPORT=UDP;lr")
    assert uri.transport == "udp"
    assert uri.host == "atlanta.com" and uri.port == 5070
    assert uri.lr


def test_sips_ipv6_and_tel_uris() -> None:
    sips = parse_sip_uri("sips:+14155550100@[2001:db8::1]:5061;user=phone")
    assert sips.secure and sips.bare_host == "2001:db8::1" and sips.port == 5061
    assert sips.user == "+14155550100"
    tel = parse_uri("tel:+1-201-555-0123;ext=1234")
    assert isinstance(tel, TelUri) and tel.is_global and tel.param("ext") == "1234"
    assert str(tel) == "tel:+1-201-555-0123;ext=1234"


def test_password_and_params_round_trip() -> None:
    text = "sip:alice:secret@atlanta.com;maddr=239.255.255.1;ttl=15"
    uri = parse_uri(text)
    assert isinstance(uri, SipUri) and uri.password == "secret" and uri.param("ttl") == "15"
    assert str(uri) == text


@pytest.mark.parametrize(
    "text",
    ["sip:", "sip:@host", "sip:user@", "sip:host:99999", "nocolon", "sip:[::1", "sip:a b@c"],
)
def test_bad_uris_are_rejected(text: str) -> None:
    with pytest.raises(SipParseError):
        parse_uri(text)


def test_name_addr_forms() -> None:
    quoted = parse_name_addr('"Doe, John" <sip:john@example.com>;tag=abc')
    assert quoted.display_name == "Doe, John" and quoted.tag == "abc"
    assert str(quoted) == '"Doe, John" <sip:john@example.com>;tag=abc'
    spec = parse_name_addr("sip:john@example.com;tag=xyz")
    assert spec.tag == "xyz" and not spec.sip_uri.params
    tokens = parse_name_addr("John Doe <sip:j@e.com>")
    assert tokens.display_name == "John Doe"


def test_via_received_rport_and_ipv6() -> None:
    via = parse_via("SIP/2.0/udp [2001:db8::5]:5062;branch=z9hG4bKx;rport")
    assert via.transport == "UDP" and via.port == 5062 and via.wants_rport
    assert via.rport is None and via.is_rfc3261
    filled = via.with_param("rport", "4000").with_param("received", "2001:db8::5")
    assert filled.rport == 4000
    assert str(parse_via(str(filled))) == str(filled)


def test_cseq_limits() -> None:
    assert parse_cseq("2147483647 BYE").seq == 2**31 - 1
    with pytest.raises(SipParseError):
        parse_cseq("2147483648 BYE")
    with pytest.raises(SipParseError):
        parse_cseq("1")


def test_digest_challenge_params() -> None:
    challenge = parse_auth(
        'Digest realm="atlanta.com", qop="auth,auth-int", nonce="84a4cc6f", algorithm=SHA-256'
    )
    assert challenge.scheme == "Digest"
    assert challenge.params["qop"] == "auth,auth-int"
    assert challenge.params["algorithm"] == "SHA-256"


def test_subscription_state() -> None:
    state = parse_subscription_state("terminated;reason=noresource")
    assert state.state == "terminated" and state.reason == "noresource"
    assert parse_subscription_state("active;expires=60").expires == 60


@pytest.mark.timeout(5)
def test_near_miss_addresses_do_not_backtrack() -> None:
    words = " ".join(f"w{n}" for n in range(60))
    with pytest.raises(SipParseError):
        parse_name_addr(f'{words} <sip:a@b>;p="unterminated')
    with pytest.raises(SipParseError):
        parse_via("SIP/2.0/UDP " + "a" * 5000 + ";" * 3000)


@pytest.mark.parametrize("text", ["abc", "id-1_2.3~", "", "a b", "call@h;to-tag=1", "é",
                                  "%41", "a&b=c", "[::1]:5060", "x/y?z"])
@pytest.mark.parametrize("safe", ["", "[]/?:+$-_.!~*'()"])
def test_escape_is_what_quote_gives(text: str, safe: str) -> None:
    assert escape(text, safe) == quote(text, safe=safe)


def test_ip_literals_are_told_from_names_and_the_memory_of_them_stays_bounded() -> None:
    for _ in range(2):  # the second time from memory
        assert is_ip_address("127.0.0.1") and is_ip_address("::1")
        assert is_ip_address("fe80::1%eth0")
        assert not is_ip_address("pbx.example.com") and not is_ip_address("01.2.3.4")
        assert not is_ip_address("[::1]") and not is_ip_address("")
    for n in range(3000):
        is_ip_address(f"host{n}.example")
    assert len(uri_module._ADDRESS_KINDS) <= uri_module._ADDRESS_LIMIT
    assert is_ip_address("10.0.0.1") and not is_ip_address("host1.example")
    long_name = "x" * 60_000 + ".example"
    assert not is_ip_address(long_name) and long_name not in uri_module._ADDRESS_KINDS


@given(text=st.text(alphabet=st.characters(max_codepoint=0x2FF, exclude_categories=("Cs",)),
                    max_size=40),
       safe=st.sampled_from(["", "[]/?:+$-_.!~*'()", "/", "%", ":@"]))
def test_escape_is_what_quote_gives_for_any_text(text: str, safe: str) -> None:
    """The translate table (ASCII) and the fallback (the rest) both match quote()."""
    assert escape(text, safe) == quote(text, safe=safe)
