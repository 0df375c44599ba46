"""Transfers to names, not addresses: RFC 3263 through a DNS server the test starts.

The engine's resolver asks tests/dns_server.py (on 127.0.0.1) for pbx.test:
NAPTR -> SRV -> A, so the human rings at the host and port the records give;
with the first SRV target dead (nothing listens: an ICMP error, not a 32 s
timeout) the second takes the call; a name that does not exist fails at once
with the reason on the handoff, and the caller goes back to the AI.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.dns_server import DnsServer
from tests.interop.peers import free_port
from tests.interop.transfer_peers import (
    WAIT_FOR_BYE,
    Human,
    caller_hangs_up,
    human_hangs_up,
    kinds,
    run_transfer,
)
from warmline.calls.call import Call
from warmline.transfer.handoff import Destination, Handoff, TransferMode
from warmline.transport.resolver import Resolver

pytestmark = pytest.mark.interop


def zone(*srv: tuple[int, int]) -> str:
    """NAPTR for UDP, then SRV records (priority, port) all on 127.0.0.1 (h.pbx.test)."""
    lines = ['pbx.test. 60 IN NAPTR 10 10 "s" "SIP+D2U" "" _sip._udp.pbx.test.']
    lines += [f"_sip._udp.pbx.test. 60 IN SRV {priority} 10 {port} h.pbx.test."
              for priority, port in srv]
    lines.append("h.pbx.test. 60 IN A 127.0.0.1")
    return "\n".join(lines)


def transfer_to(uri: str) -> object:
    def make(call: Call) -> Handoff:
        return Handoff(call.id, Destination(uri, TransferMode.BRIDGE, 8), fallback=["ai"])
    return make


def test_a_name_reaches_the_host_and_port_its_records_give(tmp_path: Path) -> None:
    human = Human("human_answers.xml", {"ring_ms": "100", "tail": human_hangs_up(300)})
    with DnsServer(zone((10, human.port))) as dns:
        outcome = asyncio.run(run_transfer(
            tmp_path, WAIT_FOR_BYE, transfer_to("sip:human@pbx.test"), [human],  # type: ignore[arg-type]
            engine_options={"resolver": Resolver([dns.address])}))
        asked = list(dns.queries)
    assert outcome.handoff.status == "completed" and "connected" in kinds(outcome.handoff)
    assert ("pbx.test", "NAPTR") in asked and ("_sip._udp.pbx.test", "SRV") in asked


def test_the_second_srv_target_takes_the_call_when_the_first_is_dead(tmp_path: Path) -> None:
    human = Human("human_answers.xml", {"ring_ms": "100", "tail": human_hangs_up(300)})
    dead = free_port()  # nothing listens: the INVITE draws an ICMP port unreachable
    started = time.monotonic()
    with DnsServer(zone((10, dead), (20, human.port))) as dns:
        outcome = asyncio.run(run_transfer(
            tmp_path, WAIT_FOR_BYE, transfer_to("sip:human@pbx.test"), [human],  # type: ignore[arg-type]
            engine_options={"resolver": Resolver([dns.address])}))
    handoff = outcome.handoff
    assert handoff.status == "completed" and "connected" in kinds(handoff)
    assert outcome.engine.switchboard.shell.ua.counters.failovers == 1
    assert time.monotonic() - started < 15  # not a 32 s Timer B


def test_a_name_that_does_not_exist_fails_at_once_with_the_reason(tmp_path: Path) -> None:
    with DnsServer(zone()) as dns:
        started = time.monotonic()
        outcome = asyncio.run(run_transfer(
            tmp_path, caller_hangs_up(2500), transfer_to("sip:human@nowhere.pbx.test"),
            [], engine_options={"resolver": Resolver([dns.address])}))  # type: ignore[arg-type]
    handoff = outcome.handoff
    [failed] = [e for e in handoff.events if e.kind == "dns_failed"]
    assert failed.detail["name"] == "nowhere.pbx.test"
    assert "no such name" in failed.detail["reason"] and handoff.status == "failed"
    assert handoff.reason == "dns_failed: nowhere.pbx.test: no such name"
    assert outcome.returned and outcome.returned[0][0] == handoff.reason
    assert time.monotonic() - started < 10


@pytest.mark.parametrize(("trouble", "reason"), [("silent", "did not answer within"),
                                                 ("garbage", "unreadable DNS answer")])
def test_a_dns_server_in_trouble_is_one_clear_outcome_and_the_caller_is_not_left(
        tmp_path: Path, trouble: str, reason: str) -> None:
    with DnsServer(zone(), **{trouble: ["pbx.test"]}) as dns:  # type: ignore[arg-type]
        outcome = asyncio.run(run_transfer(
            tmp_path, caller_hangs_up(3500), transfer_to("sip:human@pbx.test"), [],
            engine_options={"resolver": Resolver([dns.address], timeout=0.5)}))  # type: ignore[arg-type]
    handoff = outcome.handoff
    [failed] = [e for e in handoff.events if e.kind == "dns_failed"]
    assert reason in failed.detail["reason"] and handoff.status == "failed"
    assert outcome.returned  # back with the AI, told why
