"""RFC 3263 server location against a real (tiny) DNS server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import uvloop

from tests.dns_server import DnsServer
from warmline.sip.events import Target
from warmline.sip.uri import parse_sip_uri
from warmline.transport.resolver import (
    Resolution,
    ResolutionError,
    Resolver,
    SrvRecord,
    order_srv,
    parse_hosts,
)

ZONE = """
pbx.test.            300 IN NAPTR 10 10 "s" "SIP+D2U" "" _sip._udp.pbx.test.
_sip._udp.pbx.test.  300 IN SRV   10 60 5070 a.pbx.test.
_sip._udp.pbx.test.  300 IN SRV   20 0  5071 b.pbx.test.
a.pbx.test.          300 IN A     127.0.0.2
b.pbx.test.          300 IN A     127.0.0.3

multi.test.          300 IN NAPTR 30 10 "s" "SIP+D2U"  "" _sip._udp.multi.test.
multi.test.          300 IN NAPTR 10 20 "s" "SIP+D2T"  "" _sip._tcp.multi.test.
multi.test.          300 IN NAPTR 10 10 "s" "SIPS+D2T" "" _sips._tcp.multi.test.
multi.test.          300 IN NAPTR 5  10 "s" "SIP+D2S"  "" _sip._sctp.multi.test.
_sip._udp.multi.test.  300 IN SRV 0 0 5080 m.multi.test.
_sip._tcp.multi.test.  300 IN SRV 0 0 5081 m.multi.test.
_sips._tcp.multi.test. 300 IN SRV 0 0 5082 m.multi.test.
_sip._sctp.multi.test. 300 IN SRV 0 0 5083 m.multi.test.
m.multi.test.        300 IN A     127.0.0.4

srvonly.test.        300 IN TXT   "no NAPTR here"
_sip._udp.srvonly.test. 300 IN SRV 0 0 5090 s.srvonly.test.
_sip._tcp.srvonly.test. 300 IN SRV 0 0 5091 s.srvonly.test.
s.srvonly.test.      300 IN A     127.0.0.5

plain.test.          60  IN A     127.0.0.6

dual.test.           300 IN A     127.0.0.7
dual.test.           300 IN A     127.0.0.8
dual.test.           300 IN AAAA  ::1
dual.test.           300 IN AAAA  ::2

closed.test.         300 IN NAPTR 10 10 "s" "SIP+D2U" "" _sip._udp.closed.test.
_sip._udp.closed.test. 300 IN SRV 0 0 0 .

halfbroken.test.     300 IN NAPTR 10 10 "s" "SIP+D2U" "" _sip._udp.halfbroken.test.
_sip._udp.halfbroken.test. 300 IN SRV 10 0 5060 broken.test.
_sip._udp.halfbroken.test. 300 IN SRV 20 0 5062 plain.test.
"""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def dns() -> Iterator[DnsServer]:
    with DnsServer(
        ZONE, servfail=["broken.test"], silent=["quiet.test"], garbage=["junk.test"]
    ) as server:
        yield server


def resolve(resolver: Resolver, uri: str, default_transport: str = "udp") -> Resolution:
    return asyncio.run(resolver.resolve(parse_sip_uri(uri), default_transport))


def failure(resolver: Resolver, uri: str) -> ResolutionError:
    with pytest.raises(ResolutionError) as caught:
        resolve(resolver, uri)
    return caught.value


def resolver_for(dns: DnsServer, **options: Any) -> Resolver:
    return Resolver([dns.address], timeout=1.0, **options)


# -- no DNS at all ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "target"),
    [
        ("sip:human@127.0.0.1:5070", Target("udp", "127.0.0.1", 5070)),
        ("sip:human@127.0.0.1", Target("udp", "127.0.0.1", 5060)),
        ("sip:human@[::1]:5070", Target("udp", "::1", 5070)),
        ("sip:human@[::1];transport=tcp", Target("tcp", "::1", 5060)),
        ("sips:human@127.0.0.1", Target("tls", "127.0.0.1", 5061)),
        ("sips:human@127.0.0.1;transport=tcp", Target("tls", "127.0.0.1", 5061)),
        ("sip:human@pbx.test;maddr=127.0.0.9", Target("udp", "127.0.0.9", 5060)),
        ("sip:human@pbx.test:5070;maddr=[::1]", Target("udp", "::1", 5070)),
    ],
)
def test_numeric_hosts_are_one_target_without_dns(
    dns: DnsServer, uri: str, target: Target
) -> None:
    resolution = resolve(resolver_for(dns), uri)
    assert resolution.targets == (target,)
    assert dns.count() == 0


def test_the_default_transport_applies_to_numeric_hosts(dns: DnsServer) -> None:
    resolution = resolve(resolver_for(dns), "sip:human@127.0.0.1", default_transport="tcp")
    assert resolution.targets == (Target("tcp", "127.0.0.1", 5060),)


def test_localhost_with_a_port_works_with_our_nameservers_and_the_system_resolver(
    dns: DnsServer,
) -> None:
    for resolver in (resolver_for(dns), Resolver(timeout=1.0)):
        resolution = resolve(resolver, "sip:human@localhost:5080")
        assert Target("udp", "127.0.0.1", 5080) in resolution.targets
        assert {t.host for t in resolution.targets} <= {"127.0.0.1", "::1"}
        assert {t.port for t in resolution.targets} == {5080}
    assert dns.count() == 0  # /etc/hosts answered


# -- RFC 3263 §4: NAPTR, SRV, A/AAAA ------------------------------------------------


def test_an_explicit_port_asks_only_for_addresses(dns: DnsServer) -> None:
    resolution = resolve(resolver_for(dns), "sip:human@dual.test:5099;transport=tcp")
    assert resolution.targets == tuple(
        Target("tcp", host, 5099) for host in ("127.0.0.7", "127.0.0.8", "::1", "::2")
    )
    assert dns.count() == dns.count(qtype="A") + dns.count(qtype="AAAA") == 2


def test_naptr_then_srv_then_a_in_priority_order_with_readable_steps(dns: DnsServer) -> None:
    resolution = resolve(resolver_for(dns), "sip:human@pbx.test")
    assert resolution.name == "pbx.test"
    assert resolution.targets == (
        Target("udp", "127.0.0.2", 5070),
        Target("udp", "127.0.0.3", 5071),
    )
    assert resolution.steps == (
        "NAPTR pbx.test: SIP+D2U -> _sip._udp.pbx.test (order 10, pref 10)",
        "SRV _sip._udp.pbx.test: 10 60 5070 a.pbx.test, 20 0 5071 b.pbx.test",
        "A a.pbx.test: 127.0.0.2 (ttl 300)",
        "AAAA a.pbx.test: no records",
        "A b.pbx.test: 127.0.0.3 (ttl 300)",
        "AAAA b.pbx.test: no records",
    )


def test_weights_share_one_priority_and_a_seeded_rng_pins_the_order(dns: DnsServer) -> None:
    dns.set_zone("""
        w.test.          300 IN NAPTR 10 10 "s" "SIP+D2U" "" _sip._udp.w.test.
        _sip._udp.w.test. 300 IN SRV 10 70 5070 heavy.w.test.
        _sip._udp.w.test. 300 IN SRV 10 30 5071 light.w.test.
        _sip._udp.w.test. 300 IN SRV 20 0  5072 backup.w.test.
        heavy.w.test.    300 IN A 127.0.0.2
        light.w.test.    300 IN A 127.0.0.3
        backup.w.test.   300 IN A 127.0.0.4
    """)
    firsts: Counter[int] = Counter()
    for seed in range(20):
        targets = resolve(resolver_for(dns, rng=random.Random(seed)), "sip:h@w.test").targets
        assert {t.port for t in targets[:2]} == {5070, 5071}
        assert targets[2] == Target("udp", "127.0.0.4", 5072)
        firsts[targets[0].port] += 1
        again = resolve(resolver_for(dns, rng=random.Random(seed)), "sip:h@w.test").targets
        assert again == targets
    assert firsts[5070] > firsts[5071] > 0


def test_naptr_order_and_preference_pick_the_transports(dns: DnsServer) -> None:
    targets = resolve(resolver_for(dns), "sip:human@multi.test").targets
    assert targets == (
        Target("tls", "127.0.0.4", 5082),  # order 10 pref 10
        Target("tcp", "127.0.0.4", 5081),  # order 10 pref 20
        Target("udp", "127.0.0.4", 5080),  # order 30; SIP+D2S (SCTP) passed over
    )
    udp_only = resolve(resolver_for(dns, transports=frozenset({"udp"})), "sip:human@multi.test")
    assert udp_only.targets == (Target("udp", "127.0.0.4", 5080),)
    assert "passed over SIP+D2S, SIPS+D2T, SIP+D2T" in udp_only.steps[0]


def test_without_naptr_srv_is_asked_for_each_transport_most_secure_first(
    dns: DnsServer,
) -> None:
    resolution = resolve(resolver_for(dns), "sip:human@srvonly.test")
    assert resolution.targets == (
        Target("tcp", "127.0.0.5", 5091),
        Target("udp", "127.0.0.5", 5090),
    )
    assert resolution.steps[:4] == (
        "NAPTR srvonly.test: no records",
        "SRV _sips._tcp.srvonly.test: no such name",
        "SRV _sip._tcp.srvonly.test: 0 0 5091 s.srvonly.test",
        "SRV _sip._udp.srvonly.test: 0 0 5090 s.srvonly.test",
    )


def test_without_srv_the_addresses_take_the_default_port(dns: DnsServer) -> None:
    resolution = resolve(resolver_for(dns), "sip:human@plain.test")
    assert resolution.targets == (Target("udp", "127.0.0.6", 5060),)
    assert "no SRV records: the addresses of plain.test on port 5060 (udp)" in resolution.steps


def test_a_transport_parameter_skips_naptr(dns: DnsServer) -> None:
    resolution = resolve(resolver_for(dns), "sip:human@srvonly.test;transport=tcp")
    assert resolution.targets == (Target("tcp", "127.0.0.5", 5091),)
    assert dns.count(qtype="NAPTR") == 0
    assert dns.count(qtype="SRV") == 1


def test_sips_only_ever_leads_to_tls(dns: DnsServer) -> None:
    resolver = resolver_for(dns)
    assert resolve(resolver, "sips:human@multi.test").targets == (
        Target("tls", "127.0.0.4", 5082),
    )
    assert resolve(resolver, "sips:human@plain.test").targets == (
        Target("tls", "127.0.0.6", 5061),
    )
    assert resolve(resolver, "sips:human@plain.test;transport=tcp").targets == (
        Target("tls", "127.0.0.6", 5061),
    )
    assert failure(resolver, "sips:human@plain.test;transport=udp").reason == (
        "a sips: URI needs TLS, not udp"
    )


def test_every_a_and_aaaa_address_is_a_target_for_failover(dns: DnsServer) -> None:
    dns.set_zone("""
        _sip._udp.v6.test. 300 IN SRV 0 0 5070 both.v6.test.
        both.v6.test. 300 IN A    127.0.0.2
        both.v6.test. 300 IN AAAA ::1
        both.v6.test. 300 IN AAAA ::2
    """)
    resolution = resolve(resolver_for(dns), "sip:human@v6.test;transport=udp")
    assert resolution.targets == (
        Target("udp", "127.0.0.2", 5070),
        Target("udp", "::1", 5070),
        Target("udp", "::2", 5070),
    )
    assert "AAAA both.v6.test: ::1, ::2 (ttl 300)" in resolution.steps


def test_a_srv_target_of_dot_means_no_sip_here(dns: DnsServer) -> None:
    error = failure(resolver_for(dns), "sip:human@closed.test")
    assert str(error) == "closed.test: no SIP server records"
    assert "SRV _sip._udp.closed.test: 0 0 0 ." in error.steps
    assert dns.count(qtype="A") == 0


def test_one_failing_srv_target_leaves_the_others(dns: DnsServer) -> None:
    resolution = resolve(resolver_for(dns), "sip:human@halfbroken.test")
    assert resolution.targets == (Target("udp", "127.0.0.6", 5062),)
    assert "A broken.test: the DNS server answered SERVFAIL" in resolution.steps


def test_large_answers_come_over_tcp(dns: DnsServer) -> None:
    dns.set_zone([
        *(f"_sip._udp.big.test. 300 IN SRV 10 10 {6000 + i} h{i}.big.test." for i in range(80)),
        *(f"h{i}.big.test. 300 IN A 127.0.1.{i}" for i in range(80)),
    ])
    resolution = resolve(resolver_for(dns), "sip:human@big.test;transport=udp")
    assert len(resolution.targets) == 32  # the expansion is capped, whatever the zone lists
    assert dns.count("_sip._udp.big.test", "SRV") == 2  # truncated over UDP, then TCP


# -- the cache ----------------------------------------------------------------------


def test_answers_are_cached_until_their_ttl_runs_out(dns: DnsServer) -> None:
    dns.negative_ttl = 300  # "no AAAA" expires with the rest
    clock = FakeClock()
    resolver = resolver_for(dns, clock=clock)
    first = resolve(resolver, "sip:human@pbx.test")
    asked = dns.count()
    assert asked == 6  # NAPTR, SRV, A and AAAA for each of two servers

    clock.now += 299
    second = resolve(resolver, "sip:human@pbx.test")
    assert dns.count() == asked
    assert second.targets == first.targets
    assert "A a.pbx.test: 127.0.0.2 (ttl 1, cached)" in second.steps
    assert "AAAA a.pbx.test: no records (cached)" in second.steps

    clock.now += 2
    resolve(resolver, "sip:human@pbx.test")
    assert dns.count() == 2 * asked


def test_negative_answers_are_cached_for_the_soa_minimum(dns: DnsServer) -> None:
    clock = FakeClock()
    resolver = resolver_for(dns, clock=clock)
    for _ in range(3):
        failure(resolver, "sip:human@nope.test")
    assert dns.count() == 1  # NXDOMAIN covers every type under the name (RFC 8020)
    clock.now += 6  # the test server's SOA minimum is 5 s
    failure(resolver, "sip:human@nope.test")
    assert dns.count() == 2


def test_failures_are_not_cached(dns: DnsServer) -> None:
    resolver = resolver_for(dns)
    failure(resolver, "sip:human@broken.test")
    failure(resolver, "sip:human@broken.test")
    assert dns.count("broken.test") == 2


def test_the_cache_is_bounded(dns: DnsServer) -> None:
    resolver = resolver_for(dns, max_cached=3)
    resolve(resolver, "sip:human@pbx.test")
    assert resolver.cached_answers == 3
    uncached = resolver_for(dns, max_cached=0)
    resolve(uncached, "sip:human@pbx.test")
    resolve(uncached, "sip:human@pbx.test")
    assert uncached.cached_answers == 0


# -- every failure is a ResolutionError with a reason -------------------------------


def test_no_such_name_fails_fast(dns: DnsServer) -> None:
    started = time.monotonic()
    error = failure(resolver_for(dns), "sip:human@nope.test")
    assert time.monotonic() - started < 0.5
    assert str(error) == "nope.test: no such name"
    assert (error.name, error.reason) == ("nope.test", "no such name")
    assert error.steps[0] == "NAPTR nope.test: no such name"


def test_a_server_that_never_answers_fails_within_the_timeout(dns: DnsServer) -> None:
    resolver = Resolver([dns.address], timeout=0.3)
    started = time.monotonic()
    error = failure(resolver, "sip:human@quiet.test")
    assert 0.25 < time.monotonic() - started < 0.8
    assert error.reason == "the DNS server did not answer within 0.3s"


def test_an_unreadable_answer_is_reported_as_such(dns: DnsServer) -> None:
    error = failure(resolver_for(dns), "sip:human@junk.test")
    assert str(error) == "junk.test: unreadable DNS answer"


def test_servfail_is_reported(dns: DnsServer) -> None:
    error = failure(resolver_for(dns), "sip:human@broken.test:5060")
    assert error.reason == "the DNS server answered SERVFAIL"


def test_a_name_without_addresses_has_no_sip_server(dns: DnsServer) -> None:
    error = failure(resolver_for(dns), "sip:human@srvonly.test:5060")
    assert error.reason == "no SIP server records"


@pytest.mark.parametrize(
    ("uri", "transports", "reason"),
    [
        ("sip:human@pbx.test;transport=sctp", None, "transport sctp is not supported"),
        ("sip:human@pbx.test;transport=tcp", frozenset({"udp"}), "transport tcp is not enabled"),
        ("sips:human@pbx.test", frozenset({"udp", "tcp"}), "transport tls is not enabled"),
    ],
)
def test_transports_we_cannot_send_on_are_refused(
    dns: DnsServer, uri: str, transports: frozenset[str] | None, reason: str
) -> None:
    options = {} if transports is None else {"transports": transports}
    assert failure(resolver_for(dns, **options), uri).reason == reason
    assert dns.count() == 0


def test_the_default_transport_need_not_be_enabled_when_dns_leads_elsewhere(
    dns: DnsServer,
) -> None:
    resolver = resolver_for(dns, transports=frozenset({"tcp"}))
    assert resolve(resolver, "sip:human@srvonly.test").targets == (
        Target("tcp", "127.0.0.5", 5091),
    )
    assert failure(resolver, "sip:human@plain.test").reason == "transport udp is not enabled"


def test_a_name_dns_cannot_carry_is_refused(dns: DnsServer) -> None:
    error = failure(resolver_for(dns), f"sip:human@{'x' * 70}.test")
    assert error.reason == "not a valid DNS name"


# -- pieces -------------------------------------------------------------------------


def test_order_srv_follows_rfc_2782() -> None:
    records = [
        SrvRecord(20, 0, 5072, "c"),
        SrvRecord(10, 3, 5070, "a"),
        SrvRecord(10, 1, 5071, "b"),
        SrvRecord(10, 0, 5073, "z"),
    ]
    rng = random.Random(7)
    firsts: Counter[str] = Counter()
    for _ in range(2000):
        ordered = order_srv(records, rng)
        assert [r.priority for r in ordered] == [10, 10, 10, 20]
        assert sorted(ordered) == sorted(records)
        firsts[ordered[0].target] += 1
    # One draw in 0..4 over z(0) a(3) b(1): z takes 0, a takes 1-3, b takes 4.
    assert 1050 < firsts["a"] < 1350
    assert 300 < firsts["b"] < 500
    assert 300 < firsts["z"] < 500  # weight 0: first only when the draw lands on 0
    assert order_srv([], rng) == []
    zeros = [SrvRecord(0, 0, 1, "x"), SrvRecord(0, 0, 2, "y")]
    assert sorted(order_srv(zeros, rng)) == zeros


def test_parse_hosts_reads_names_and_aliases() -> None:
    table = parse_hosts(
        "# comment\n"
        "127.0.0.1   localhost  Loopback.  # trailing comment\n"
        "::1         localhost ip6-localhost\n"
        "not-an-ip   broken\n"
        "10.0.0.1\n"
        "fe80::1%eth0 linklocal\n"
    )
    assert table == {
        "localhost": ("127.0.0.1", "::1"),
        "loopback": ("127.0.0.1",),
        "ip6-localhost": ("::1",),
        "linklocal": ("fe80::1%eth0",),
    }


def test_it_runs_on_uvloop(dns: DnsServer) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        resolution = runner.run(resolver_for(dns).resolve(parse_sip_uri("sip:human@pbx.test")))
    assert resolution.targets[0] == Target("udp", "127.0.0.2", 5070)
