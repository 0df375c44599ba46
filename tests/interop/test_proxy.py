"""warmline behind a real Kamailio (record_route() + dispatcher): issue 11, "Proxies in front".

The bug was 0 of 50 calls completing through such a proxy: warmline's 200 OK
did not copy Record-Route, so the caller's ACK and BYE had no route through the
proxy. These tests run the layout of tests/interop/kamailio.py with sipp callers:
load over two `warmline serve` instances, failover past a dead one, and the
in-dialog requests of blind and bridge transfers (REFER, NOTIFY, BYE) through
the proxy.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.interop.kamailio import Kamailio, Trace, kamailio
from tests.interop.peers import (
    ServeProcess,
    SippResult,
    engine,
    free_port,
    relay_block,
    render_scenario,
    run_sipp,
    start_serve,
    stop_serve,
    wait_for_log,
)
from tests.interop.transfer_peers import Human, human_hangs_up, kinds
from warmline.calls.call import Call
from warmline.engine import CallEngine
from warmline.media.relay import EmbeddedRelay, PortRange
from warmline.transfer.handoff import Destination, Handoff

pytestmark = pytest.mark.interop

CALLS = 200


def answered(log: str) -> int:
    match = re.search(r"stopped: (\d+) call\(s\) answered", log)
    assert match, f"no totals line in the serve log:\n{log[-2000:]}"
    return int(match.group(1))


def test_200_calls_through_kamailio_over_two_warmline_instances(tmp_path: Path) -> None:
    ports = [free_port(), free_port()]
    servers: list[ServeProcess] = []
    try:
        for n, port in enumerate(ports):
            workdir = tmp_path / f"warmline{n}"
            workdir.mkdir()
            servers.append(start_serve(["--sip", f"udp:127.0.0.1:{port}"], workdir))
        for server, port in zip(servers, ports, strict=True):
            wait_for_log(server, f"listening on udp:127.0.0.1:{port}")
        backends = [f"sip:127.0.0.1:{port}" for port in ports]
        with kamailio(tmp_path / "kamailio", backends) as proxy:
            scenario = render_scenario("proxy_uac.xml", tmp_path, proxy_port=str(proxy.port),
                                       hold_ms="300")
            result = asyncio.run(run_sipp(
                ["-sf", str(scenario), f"127.0.0.1:{proxy.port}", "-p", str(free_port()),
                 "-m", str(CALLS), "-r", "50", "-l", "40"], tmp_path, timeout=40))
            stats = proxy.tm_stats()
            traces = proxy.traces()
    finally:
        codes = [stop_serve(server) for server in servers]
    logs = [server.log() for server in servers]

    assert result.returncode == 0, result.output[-4000:]
    assert result.stat("Successful call") == CALLS, result.output[-4000:]
    assert result.stat("Failed call") == 0, result.output[-4000:]
    assert codes == [0, 0], logs

    # every call went to one of the two, round-robin, and each saw its ACK and BYE
    per_backend = [answered(log) for log in logs]
    assert sum(per_backend) == CALLS and min(per_backend) >= CALLS // 2 - 5, per_backend
    assert [log.count("ended by caller") for log in logs] == per_backend, per_backend

    # what Kamailio routed: the INVITEs by the dispatcher, ACK and BYE by loose_route()
    initial = [t for t in traces if t.kind == "initial"]
    assert Counter(t.fields["dst"] for t in initial) == dict(zip(backends, per_backend,
                                                                 strict=True))
    # the caller's ACK and BYE carried the route set learnt from warmline's 200
    in_dialog = Counter(t.method for t in traces if t.kind == "in-dialog")
    assert in_dialog == {"ACK": CALLS, "BYE": CALLS}, in_dialog
    assert all(t.fields["route"] == proxy.record_route for t in traces if t.kind == "in-dialog")
    assert not [t for t in traces if t.kind in ("no-route", "failover", "no-backend")]
    # every INVITE and every BYE answered 200 through the proxy, nothing else
    assert stats["2xx"] == 2 * CALLS and stats["created"] == 2 * CALLS, stats
    assert stats["4xx"] == stats["5xx"] == stats["6xx"] == 0, stats


def test_a_dead_instance_is_failed_over_and_marked_inactive(tmp_path: Path) -> None:
    """Nothing listens on the first backend: fr_timer, then the dispatcher's next one."""
    dead, port = free_port(), free_port()
    workdir = tmp_path / "warmline"
    workdir.mkdir()
    server = start_serve(["--sip", f"udp:127.0.0.1:{port}"], workdir)
    try:
        wait_for_log(server, f"listening on udp:127.0.0.1:{port}")
        dead_uri, live_uri = f"sip:127.0.0.1:{dead}", f"sip:127.0.0.1:{port}"
        with kamailio(tmp_path / "kamailio", [dead_uri, live_uri], fr_timer_ms=800) as proxy:
            scenario = render_scenario("proxy_uac.xml", tmp_path, proxy_port=str(proxy.port),
                                       hold_ms="100")
            result = asyncio.run(run_sipp(
                ["-sf", str(scenario), f"127.0.0.1:{proxy.port}", "-p", str(free_port()),
                 "-m", "10", "-r", "10"], tmp_path, timeout=20))
            flags = proxy.dispatcher_flags()
            traces = proxy.traces()
    finally:
        code = stop_serve(server)
    assert result.returncode == 0, result.output[-4000:]
    assert result.stat("Successful call") == 10 and result.stat("Failed call") == 0
    assert code == 0 and answered(server.log()) == 10
    failovers = [t for t in traces if t.kind == "failover"]
    assert failovers and all(t.fields["from"] == dead_uri for t in failovers), failovers
    assert flags[dead_uri].startswith("I") and flags[live_uri].startswith("A"), flags


@dataclass
class ThroughProxy:
    handoff: Handoff
    engine_port: int
    caller: SippResult
    proxy: Kamailio  # stopped; its log and traces stay readable
    legs_left: int


async def transfer_through_proxy(tmp_path: Path, caller_scenario: str,
                                 make_handoff: Callable[[Call], Handoff],
                                 humans: list[Human]) -> ThroughProxy:
    """A sipp caller calls Kamailio, which dispatches to an in-process warmline engine;
    the engine starts ``make_handoff`` on answer. Every peer must pass."""
    handoffs: list[Handoff] = []
    base = relay_block()
    relay = EmbeddedRelay("127.0.0.1", PortRange(base, base + 60))
    async with engine("udp") as running:
        backend = f"sip:127.0.0.1:{running.spec.port}"
        with kamailio(tmp_path / "kamailio", [backend]) as proxy:
            def on_call(call: Call) -> None:
                handoffs.append(calls.transfer(call.id, make_handoff(call)))

            calls = CallEngine(running.shell, relay, "127.0.0.1", ["PCMU", "PCMA"], on_call,
                               records_dir=tmp_path / "records")
            calls.return_announcement = None
            scenario = render_scenario(caller_scenario, tmp_path, proxy_port=str(proxy.port))
            peers = [asyncio.ensure_future(human.run(tmp_path / f"human{n}"))
                     for n, human in enumerate(humans)]
            caller = await run_sipp(["-sf", str(scenario), f"127.0.0.1:{proxy.port}",
                                     "-p", str(free_port()), "-m", "1"], tmp_path, timeout=20)
            for n, peer in enumerate(peers):
                human_result = await peer
                assert human_result.returncode == 0, f"human {n}: " + human_result.output[-3000:]
            for _ in range(60):  # the last transactions may still be finishing
                if not running.ua.sessions:
                    break
                await asyncio.sleep(0.05)
            live = [(s.call_id, s.state.value) for s in running.ua.sessions]
            legs_left = len(relay.legs)
            await calls.close()
            await relay.close()
    assert caller.returncode == 0, "caller: " + caller.output[-4000:]
    assert not live, f"dialogs left open: {live}"
    assert handoffs, "no call reached warmline through the proxy"
    return ThroughProxy(handoffs[0], running.spec.port, caller, proxy, legs_left)


def in_dialog(proxy: Kamailio, method: str) -> list[Trace]:
    return [t for t in proxy.traces("in-dialog") if t.method == method]


def test_blind_transfer_refer_and_notify_cross_kamailio(tmp_path: Path) -> None:
    def blind(call: Call) -> Handoff:
        return Handoff(call.id, Destination("sip:human@127.0.0.1:5999", "blind", 5))

    outcome = asyncio.run(transfer_through_proxy(tmp_path, "proxy_refer_caller.xml", blind, []))
    handoff, proxy = outcome.handoff, outcome.proxy
    assert handoff.status == "completed" and handoff.sip_status == 200, handoff.as_dict()
    assert {"accepted", "attempt_succeeded"} <= set(kinds(handoff)), kinds(handoff)

    # warmline's REFER and BYE: sent to Kamailio with the route set, loose-routed on
    [refer], [bye] = in_dialog(proxy, "REFER"), in_dialog(proxy, "BYE")
    for request in (refer, bye):
        assert request.source_port == outcome.engine_port, request
        assert request.fields["route"] == proxy.record_route, request
        assert request.fields["ruri"].startswith("sip:caller@127.0.0.1:"), request
    # the caller's ACK and both NOTIFYs reached warmline through Kamailio as well
    backend = f"127.0.0.1:{outcome.engine_port}"
    for method, count in (("ACK", 1), ("NOTIFY", 2)):
        requests = in_dialog(proxy, method)
        assert len(requests) == count, proxy.traces()
        assert all(backend in t.fields["ruri"] and t.fields["route"] == proxy.record_route
                   for t in requests), requests
    assert not proxy.traces("no-route"), proxy.traces("no-route")
    assert not outcome.legs_left


def test_bridge_transfer_bye_to_the_caller_crosses_kamailio(tmp_path: Path) -> None:
    human = Human("human_answers.xml", {"ring_ms": "300", "tail": human_hangs_up(800)})

    def bridge(call: Call) -> Handoff:
        return Handoff(call.id, Destination(human.uri, "bridge", 5))

    outcome = asyncio.run(transfer_through_proxy(tmp_path, "proxy_caller_waits.xml", bridge,
                                                 [human]))
    handoff, proxy = outcome.handoff, outcome.proxy
    assert handoff.status == "completed", handoff.as_dict()
    assert handoff.reason == "the human hung up"
    assert {"ringing", "answered", "connected"} <= set(kinds(handoff)), kinds(handoff)
    [bye] = in_dialog(proxy, "BYE")
    assert bye.source_port == outcome.engine_port, bye
    assert bye.fields["route"] == proxy.record_route, bye
    assert bye.fields["ruri"].startswith("sip:caller@127.0.0.1:"), bye
    assert not in_dialog(proxy, "REFER") and not proxy.traces("no-route")
    assert not outcome.legs_left
