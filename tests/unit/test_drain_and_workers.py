"""Draining a node (UA refusals, the Drain states) and the --workers supervisor's plan."""

from __future__ import annotations

import asyncio
import itertools
import sys
from pathlib import Path

import pytest

from tests.unit.test_useragent import ALICE, BOB, SDP_A, call, only, pair, raw_request
from warmline.calls.drain import Drain, DrainState
from warmline.settings import HttpSpec, ServeSettings
from warmline.sip.events import Target
from warmline.sip.message import Response, parse_message
from warmline.sip.session import CallEnded, CallFailed, IncomingCall, ProbeResult
from warmline.sip.useragent import UserAgent
from warmline.transport.listen import parse_listen
from warmline.workers import Supervisor, dispatcher_list, plan_workers, worker_argv


def test_a_draining_ua_refuses_new_calls_and_probes_503_but_ends_live_ones() -> None:
    net, alice, bob = pair()
    outbound, inbound = call(net, alice, bob)  # live before the drain
    bob.draining = True

    refused = alice.invite("sip:bob@example.com", net.now, sdp=SDP_A, target=Target("udp", *BOB))
    [failed] = only(net.take(alice), CallFailed)
    assert failed.session is refused and failed.status == 503
    assert not only(net.take(bob), IncomingCall)
    [answer] = [parse_message(t.data) for t in net.sent_by(bob, b"SIP/2.0 503")][:1]
    assert isinstance(answer, Response) and answer.reason == "Service Unavailable (draining)"
    assert answer.get("retry-after") == "5" and 'text="draining"' in (answer.get("reason") or "")

    alice.probe("sip:bob@127.0.0.2:5080", net.now)
    [probe] = only(net.take(alice), ProbeResult)
    assert probe.status == 503
    assert bob.counters.refused_draining == 2

    alice.bye(outbound, net.now)  # the live call still ends normally
    assert only(net.take(bob), CallEnded) and not bob.sessions

    bob.draining = False  # resumed: calls welcome again
    alice.probe("sip:bob@127.0.0.2:5080", net.now)
    assert only(net.take(alice), ProbeResult)[0].status == 200
    assert inbound.ended


def test_a_draining_ua_still_takes_an_invite_with_replaces() -> None:
    """An attended transfer finishing joins a live call: not a new call (here: 481, as it
    names no dialog, rather than the drain's 503)."""
    bob = UserAgent()
    bob.add_listener("udp", *BOB)
    bob.draining = True
    bob.receive(raw_request("INVITE", extra="Contact: <sip:a@127.0.0.1:5070>\r\n"
                            "Replaces: nosuch@call;to-tag=a;from-tag=b\r\n"),
                Target("udp", *ALICE), 0.0)
    finals = [m.status for m in map(parse_message, (t.data for t in bob.pop_transmissions()))
              if isinstance(m, Response) and m.status >= 200]
    assert finals == [481]


def test_drain_goes_accepting_draining_drained_and_calls_back_once() -> None:
    ua, live, clock, drained = UserAgent(), [2], [100.0], []
    drain = Drain(ua, lambda: live[0], lambda: clock[0], on_drained=lambda: drained.append(1))
    assert drain.start("test") and ua.draining and drain.state is DrainState.DRAINING
    assert not drain.start("again")  # idempotent
    assert drain.check() is DrainState.DRAINING and not drained
    live[0], clock[0] = 0, 130.0
    assert drain.check() is DrainState.DRAINED and drained == [1]
    assert drain.check() is DrainState.DRAINED and drained == [1]
    assert drain.as_dict()["since"] == 100.0 and drain.as_dict()["drained_at"] == 130.0
    assert drain.resume() and not ua.draining and drain.state is DrainState.ACCEPTING
    assert not drain.resume()


def test_a_drain_with_nothing_live_is_drained_at_once() -> None:
    drained: list[int] = []
    drain = Drain(UserAgent(), lambda: 0, lambda: 1.0, on_drained=lambda: drained.append(1))
    drain.start("idle")
    assert drain.state is DrainState.DRAINED and drained == [1]


def _settings() -> ServeSettings:
    return ServeSettings(listen=(parse_listen("udp:10.0.0.5:5070;advertise=192.0.2.1:6070"),
                                 parse_listen("tcp:10.0.0.5:5070")),
                         http=HttpSpec("127.0.0.1", 8080), media_ports=range(20001, 30000),
                         records=Path("/var/lib/warmline"))


def test_workers_get_ports_base_plus_n_and_disjoint_media_slices() -> None:
    plans = plan_workers(_settings(), 3)
    assert [p.listen[0].port for p in plans] == [5070, 5071, 5072]
    assert [p.listen[1].port for p in plans] == [5070, 5071, 5072]
    assert [p.listen[0].public for p in plans] == [("192.0.2.1", 6070 + n) for n in range(3)]
    assert [p.http for p in plans] == ["127.0.0.1:8080", "127.0.0.1:8081", "127.0.0.1:8082"]
    slices = [p.media_ports for p in plans]
    assert all(s.start % 2 == 0 and len(s) % 2 == 0 for s in slices)
    assert all(a.stop <= b.start for a, b in itertools.pairwise(slices))
    assert slices[0].start >= 20001 and slices[-1].stop <= 30000
    assert [p.records.name for p in plans] == ["worker-0", "worker-1", "worker-2"]
    assert dispatcher_list(plans).splitlines()[1:] == [
        f"1 sip:192.0.2.1:{6070 + n} 0 0 duid=worker{n}" for n in range(3)]


def test_too_few_media_ports_or_port_0_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="too few for 3 workers"):
        plan_workers(ServeSettings(media_ports=range(20000, 20010)), 3)
    with pytest.raises(ValueError, match="not 0"):
        plan_workers(ServeSettings(listen=(parse_listen("udp:127.0.0.1:0"),)), 2)


def test_worker_argv_replaces_the_per_worker_flags_and_keeps_the_rest() -> None:
    plan = plan_workers(_settings(), 2)[1]
    argv = ["--log-level", "debug", "serve", "--workers", "2", "--sip", "udp:10.0.0.5:5070",
            "--http=127.0.0.1:8080", "--config", "w.toml", "--records", "/x", "--db", "pg://"]
    assert worker_argv(argv, plan) == [
        "--log-level", "debug", "serve", "--config", "w.toml", "--db", "pg://",
        "--workers", "1", "--records", "/var/lib/warmline/worker-1",
        "--media-ports", f"{plan.media_ports.start}-{plan.media_ports.stop}",
        "--sip", "udp:10.0.0.5:5071;advertise=192.0.2.1:6071", "--sip", "tcp:10.0.0.5:5071",
        "--http", "127.0.0.1:8081"]


def test_the_supervisor_restarts_a_dead_worker_and_stops_the_rest(tmp_path: Path) -> None:
    """Worker 0 dies at once (restarted), worker 1 lives until the SIGTERM passed on."""
    script = ("import sys, time, pathlib\n"
              "records = sys.argv[sys.argv.index('--records') + 1]\n"
              "pathlib.Path(records, 'starts').open('a').write('x')\n"
              "if records.endswith('worker-0'): sys.exit(3)\n"
              "time.sleep(30)\n")
    settings = ServeSettings(records=tmp_path, listen=(parse_listen("udp:127.0.0.1:5070"),))

    async def run() -> Supervisor:
        supervisor = Supervisor(plan_workers(settings, 2), ["serve"], env={},
                                command=[sys.executable, "-c", script], backoff=0.1)
        task = asyncio.create_task(supervisor.run())
        for _ in range(100):
            await asyncio.sleep(0.05)
            if supervisor.restarts >= 2:
                break
        supervisor.stop()
        await asyncio.wait_for(task, 10)
        return supervisor

    supervisor = asyncio.run(run())
    assert supervisor.restarts >= 2
    assert len((tmp_path / "worker-0" / "starts").read_text()) >= 2
    assert (tmp_path / "worker-1" / "starts").read_text() == "x"
    assert all(p.returncode is not None for p in supervisor.processes.values())


def test_dispatcher_list_from_the_flag_or_the_cluster_section(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from warmline.cli import main

    assert main(["serve", "--workers", "2", "--sip", "udp:127.0.0.1:5070",
                 "--dispatcher-list"]) == 0
    assert capsys.readouterr().out.splitlines()[1:] == [
        "1 sip:127.0.0.1:5070 0 0 duid=worker0", "1 sip:127.0.0.1:5071 0 0 duid=worker1"]
    config = tmp_path / "w.toml"
    config.write_text('[sip]\nlisten = ["udp:127.0.0.1:6000"]\n[cluster]\nworkers = 3\n')
    assert main(["serve", "--config", str(config), "--dispatcher-list"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 4


def test_bad_worker_counts_are_refused_naming_the_key(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from warmline.cli import main

    with pytest.raises(SystemExit):
        main(["serve", "--workers", "0"])
    assert "--workers must be 1 to 256" in capsys.readouterr().err
    config = tmp_path / "w.toml"
    config.write_text("[cluster]\nworkers = 0\n")
    assert main(["serve", "--config", str(config)]) == 2
    assert "cluster.workers" in capsys.readouterr().err


def test_after_a_drain_workers_that_exit_cleanly_stay_down(tmp_path: Path) -> None:
    """SIGUSR1 passed on; each worker exits 0 (drained): no restart, the supervisor ends."""
    script = ("import signal, sys, time\n"
              "signal.signal(signal.SIGUSR1, lambda *a: sys.exit(0))\n"
              "time.sleep(30)\n")
    settings = ServeSettings(records=tmp_path, listen=(parse_listen("udp:127.0.0.1:5070"),))

    async def run() -> Supervisor:
        supervisor = Supervisor(plan_workers(settings, 2), ["serve"], env={},
                                command=[sys.executable, "-c", script], backoff=0.1)
        task = asyncio.create_task(supervisor.run())
        for _ in range(100):  # both started, their handler installed
            await asyncio.sleep(0.05)
            if len(supervisor.processes) == 2:
                break
        await asyncio.sleep(0.5)
        supervisor.drain()
        await asyncio.wait_for(task, 10)
        return supervisor

    supervisor = asyncio.run(run())
    assert supervisor.restarts == 0
    assert [p.returncode for p in supervisor.processes.values()] == [0, 0]
