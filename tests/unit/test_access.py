"""Who may start things over SIP and how fast: access modes, the per-source limiter, the
transaction cap, and the destinations an API request may name."""

from __future__ import annotations

import pytest

from tests.unit.test_useragent import raw_request
from warmline.sip.access import AccessMode, RateLimit, SourceLimiter, in_networks
from warmline.sip.events import Target
from warmline.sip.message import Response, parse_message
from warmline.sip.transaction_layer import LINGER_WEIGHT
from warmline.sip.useragent import UserAgent, UserAgentConfig
from warmline.transfer.policy import DestinationPolicy, PolicyError
from warmline.transport.listen import ListenSpecError, parse_listen

STRANGER = Target("udp", "198.51.100.7", 5060)
PBX = Target("udp", "10.1.2.3", 5060)


def agent(**config: object) -> UserAgent:
    ua = UserAgent(UserAgentConfig(**config))  # type: ignore[arg-type]
    ua.add_listener("udp", "127.0.0.2", 5060)
    return ua


def answers(ua: UserAgent) -> list[Response]:
    out = [parse_message(t.data) for t in ua.pop_transmissions()]
    return [message for message in out if isinstance(message, Response)]


def send(ua: UserAgent, source: Target, data: bytes, now: float = 0.0,
         access: AccessMode | None = None) -> list[Response]:
    ua.receive(data, source, now, access)
    return answers(ua)


def test_a_stranger_is_refused_and_a_trusted_peer_taken() -> None:
    ua = agent(trusted_networks=["10.0.0.0/8"], access=AccessMode.TRUSTED)
    [refusal] = send(ua, STRANGER, raw_request())
    assert refusal.status == 403 and "untrusted" in refusal.reason
    [ok] = send(ua, PBX, raw_request(cseq="2 OPTIONS"))
    assert ok.status == 200
    assert ua.counters.refused_untrusted == 1


def test_a_listener_can_open_or_challenge_what_the_default_refuses() -> None:
    ua = agent(trusted_networks=["10.0.0.0/8"], access=AccessMode.TRUSTED,
               auth_users={"pbx": "s3cret"})
    [challenge] = send(ua, STRANGER, raw_request(), access=AccessMode.CHALLENGE)
    assert challenge.status == 401 and challenge.get("www-authenticate")
    [taken] = send(ua, STRANGER, raw_request(cseq="3 OPTIONS"), access=AccessMode.OPEN)
    assert taken.status == 200
    assert ua.counters.challenged == 1


def test_challenge_without_accounts_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="challenge needs"):
        UserAgentConfig(trusted_networks=[], access=AccessMode.CHALLENGE)


def test_an_untrusted_flood_is_dropped_unread_past_its_burst() -> None:
    ua = agent(trusted_networks=["10.0.0.0/8"], access=AccessMode.OPEN,
               source_limit=RateLimit(rate=10, burst=20))
    answered = sum(len(send(ua, STRANGER, raw_request(cseq=f"{n} OPTIONS"), now=0.0))
                   for n in range(1, 101))
    assert answered == 20 and ua.counters.rate_limited == 80
    # a second later the bucket has 10 tokens again
    later = sum(len(send(ua, STRANGER, raw_request(cseq=f"{n} OPTIONS"), now=1.0))
                for n in range(200, 230))
    assert later == 10
    # the trusted PBX is never limited
    assert sum(len(send(ua, PBX, raw_request(cseq=f"{n} OPTIONS"), now=1.0))
               for n in range(300, 400)) == 100


def test_the_limiter_table_forgets_the_quietest_sources() -> None:
    limiter = SourceLimiter(RateLimit(rate=1, burst=1, max_sources=100))
    for n in range(10_000):
        limiter.allow(f"203.0.113.{n % 250}.{n}", float(n))
    assert len(limiter) == 100


def branch(n: int | str, data: bytes | None = None) -> bytes:
    return (data or raw_request()).replace(b"z9hG4bKrawOPTIONS", f"z9hG4bKflood{n}".encode())


def test_a_full_transaction_table_answers_503_and_keeps_room_for_the_trusted() -> None:
    ua = agent(trusted_networks=["10.0.0.0/8"], access=AccessMode.OPEN, max_transactions=10,
               retry_after=7)
    statuses = [r.status for n in range(30) for r in send(ua, STRANGER, branch(n))]
    # strangers get 90% of the table; an answered transaction, lingering 32 s as a key and
    # its bytes, counts a third of a live one (LINGER_WEIGHT)
    assert statuses == [200] * 9 * LINGER_WEIGHT + [503] * 3
    [busy] = send(ua, STRANGER, branch(99))
    assert busy.get("retry-after") == "7" and ua.counters.overloaded == 4
    [ok] = send(ua, PBX, branch("pbx"))  # the carrier still finds room
    assert ok.status == 200
    # a retransmission of a held transaction is still answered from it, not refused
    assert [r.status for r in send(ua, STRANGER, branch(0))] == [200]


def test_a_stranger_naming_no_dialog_costs_no_transaction() -> None:
    ua = agent(trusted_networks=["10.0.0.0/8"], access=AccessMode.TRUSTED)
    in_dialog = raw_request("INFO", from_="<sip:a@127.0.0.1>;tag=1").replace(
        b"To: <sip:bob@127.0.0.2>", b"To: <sip:bob@127.0.0.2>;tag=nosuch")
    for n in range(50):
        [refused] = send(ua, STRANGER, branch(n, in_dialog.replace(
            b"z9hG4bKrawINFO", f"z9hG4bKinfo{n}".encode())))
        assert refused.status == 481
    cancel = raw_request("CANCEL", cseq="1 CANCEL")
    assert [r.status for r in send(ua, STRANGER, cancel)] == [481]
    assert ua.layer.server_count == 0  # answered statelessly: nothing held for 32 s
    # from the trusted PBX the same request is answered from a transaction, as before
    assert [r.status for r in send(ua, PBX, in_dialog)] == [481]
    assert ua.layer.server_count == 1


def test_ipv4_mapped_sources_match_ipv4_networks() -> None:
    from warmline.sip.access import parse_networks
    assert in_networks("::ffff:10.1.2.3", parse_networks(["10.0.0.0/8"]))
    assert not in_networks("pbx.example.com", parse_networks(["0.0.0.0/0"]))


def test_listen_specs_carry_an_access_mode() -> None:
    spec = parse_listen("udp:0.0.0.0:5060;advertise=203.0.113.5;access=challenge")
    assert spec.access is AccessMode.CHALLENGE and spec.advertise_host == "203.0.113.5"
    assert str(spec) == "udp:0.0.0.0:5060;advertise=203.0.113.5;access=challenge"
    with pytest.raises(ListenSpecError, match="access must be"):
        parse_listen("udp:0.0.0.0:5060;access=maybe")


@pytest.mark.parametrize(("destination", "allowed"), [
    ("sip:1001@pbx.example.com", True),
    ("sips:1001@pbx.example.com:5060", True),  # sip: patterns take sips: too
    ("sips:1001@pbx.example.com", False),  # on 5061, not the pattern's 5060
    ("sip:1001@PBX.Example.com:5060", True),
    ("sip:1001@pbx.example.com:5070", False),  # the pattern names port 5060
    ("sip:x@evil.example;a=@pbx.example.com", False),  # one string would have matched
    ("sip:+19005550100@gw.carrier.example", False),
    ("tel:+44-20-7946-0000", True),
    ("tel:+19005550100", False),
    ("sip:agent@127.0.0.1:5090", True),  # loopback is trusted by default
    ("sip:agent@10.9.9.9", False),
    ("not a uri", False),
    ("sip:1001@pbx.example.com:5060;maddr=198.51.100.9", False),  # would go elsewhere
    ("sip:7@10.0.0.9", True),  # the pattern's network
    ("sip:7@10.0.0.9.attacker.example", False),  # a name is not an address in it
    ("sip:7@a.b.example.org", False),  # *.example.org is one label deep
    ("sip:7@b.example.org", True),
])
def test_destinations_are_matched_part_by_part(destination: str, allowed: bool) -> None:
    policy = DestinationPolicy.build(["sip:*@pbx.example.com:5060", "tel:+4420*",
                                      "sip:*@10.0.0.0/24", "sip:*@*.example.org"])
    assert (policy.problem(destination) is None) is allowed


def test_a_call_a_trunk_would_carry_needs_a_pattern_whatever_its_host() -> None:
    policy = DestinationPolicy.build(["tel:+4420*"])
    assert policy.problem("sip:+19005550100@127.0.0.1") is None  # direct, to loopback
    problem = policy.problem("sip:+19005550100@127.0.0.1", through_trunk=True)
    assert problem is not None and "[transfer] allow" in problem
    assert policy.problem("tel:+442079460000", through_trunk=True) is None


def test_a_bad_pattern_is_named() -> None:
    with pytest.raises(PolicyError, match="'sip:'"):
        DestinationPolicy.build(["sip:"])
    with pytest.raises(PolicyError, match="bad port"):
        DestinationPolicy.build(["sip:*@pbx:99999"])
