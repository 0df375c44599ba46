"""Two `warmline serve --http` nodes sharing one redis-server, sipp callers and humans.

Node A's API lists, reads, transfers and ends a call living on node B (forwarded to
B); the screen-pop of B's handoff opens from A with the handoff's own token; a human
limited to one call at a time is offered one of two simultaneous transfers (one per
node) and the other goes to its fallback; Redis stopped mid-call leaves both nodes
serving their calls (/readyz 200, degraded: redis), and once it is back (empty) the
calls are listed across nodes again.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.interop.peers import (
    ServeProcess,
    free_port,
    relay_block,
    render_scenario,
    run_sipp,
    start_serve,
    stop_serve,
    wait_for_log,
)
from tests.interop.redis_peer import RedisPeer, redis_server
from tests.interop.transfer_peers import WAIT_FOR_BYE, Human

pytestmark = pytest.mark.interop
TOKEN = "cluster-test-token"


def _node(workdir: Path, name: str, redis: RedisPeer) -> tuple[ServeProcess, str, int]:
    workdir.mkdir()
    sip, http, media = free_port(), free_port(), relay_block()
    (workdir / "token").write_text(TOKEN)
    (workdir / "warmline.toml").write_text(
        f'[transfer]\nmax_calls_per_destination = 1\n'
        f'[cluster]\nnode_id = "{name}"\nredis = "{redis.url}"\nheartbeat = 0.5\n'
        f'prefix = "wl"\n')
    server = start_serve(["--config", "warmline.toml", "--sip", f"udp:127.0.0.1:{sip}",
                          "--http", f"127.0.0.1:{http}", "--api-token-file", "token",
                          "--media-ports", f"{media}-{media + 40}"], workdir)
    return server, f"http://127.0.0.1:{http}", sip


async def _until(check: Any, what: str, seconds: float = 8.0) -> Any:
    for _ in range(int(seconds / 0.1)):
        result = await check()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise AssertionError(f"{what}: not within {seconds} s")


def test_any_node_serves_any_call_and_a_limit_holds_across_nodes(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis:
        node_a, url_a, sip_a = _node(tmp_path / "a", "a", redis)
        node_b, url_b, sip_b = _node(tmp_path / "b", "b", redis)
        try:
            for node in (node_a, node_b):
                wait_for_log(node, "cluster: Redis answers", timeout=15)
            asyncio.run(_drive(tmp_path, redis, url_a, url_b, sip_a, sip_b))
        finally:
            codes = [stop_serve(node) for node in (node_a, node_b)]
        assert codes == [0, 0], node_a.log()[-2000:] + node_b.log()[-2000:]


async def _drive(tmp_path: Path, redis: RedisPeer, url_a: str, url_b: str, sip_a: int,
                 sip_b: int) -> None:
    limited = Human("human_answers.xml", {"ring_ms": "1500", "tail": WAIT_FOR_BYE})
    spare = Human("human_answers.xml", {"ring_ms": "200", "tail": WAIT_FOR_BYE})
    humans = [asyncio.ensure_future(h.run(tmp_path / f"human{n}"))
              for n, h in enumerate((limited, spare))]
    callers = []
    for n, port in enumerate((sip_b, sip_a)):  # caller 0 on node B, caller 1 on node A
        workdir = tmp_path / f"caller{n}"
        workdir.mkdir()
        scenario = render_scenario("caller_waits.xml", workdir, tail=WAIT_FOR_BYE, headers="")
        callers.append(asyncio.ensure_future(run_sipp(
            ["-sf", str(scenario), f"127.0.0.1:{port}", "-p", str(free_port()), "-m", "1"],
            workdir, timeout=30)))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=url_a, headers=auth, timeout=10) as a, \
            httpx.AsyncClient(base_url=url_b, headers=auth, timeout=10) as b:
        async def both_listed() -> dict[str, str] | None:
            calls = (await a.get("/calls")).json()
            nodes = {call["node"]: call["id"] for call in calls if call["state"] == "ai"}
            return nodes if set(nodes) == {"a", "b"} else None

        ids = await _until(both_listed, "node A lists both nodes' calls")
        on_b, on_a = ids["b"], ids["a"]
        read = await a.get(f"/calls/{on_b}")  # forwarded to its owner
        assert read.status_code == 200 and read.json()["source"] == "live", read.text
        assert read.headers["x-warmline-node"] == "b"
        assert (await a.get("/calls/call-nowhere")).status_code == 404
        bot = {"Authorization": f"Bearer {read.json()['token']}"}  # B's call's own token
        turn = await a.post(f"/calls/{on_b}/turns", headers=bot,
                            json={"speaker": "caller", "text": "my bill is wrong"})
        assert turn.status_code == 201, turn.text  # checked by B, which knows the token
        refused = await a.post(f"/calls/{on_b}/hangup", headers={"Authorization": "Bearer x"})
        assert refused.status_code == 401
        assert (await a.get("/calls/call-nowhere", headers={"Authorization": ""})
                ).status_code == 401  # not forwarded anywhere: refused here

        # one human who takes one call at a time, two transfers at once (one per node,
        # both asked of node A): one rings him, the other goes to the fallback at once
        body = {"to": limited.uri, "mode": "bridge", "timeout": 10,
                "fallback": [{"to": spare.uri}], "context": {"intent": "billing"}}
        answers = await asyncio.gather(a.post(f"/calls/{on_b}/transfer", json=body),
                                       a.post(f"/calls/{on_a}/transfer", json=body))
        assert [r.status_code for r in answers] == [202, 202], [r.text for r in answers]
        handoff_b, handoff_a = (r.json()["handoff_id"] for r in answers)

        async def connected() -> list[dict[str, Any]] | None:
            rows = [(await a.get(f"/handoffs/{h}")).json() for h in (handoff_b, handoff_a)]
            return rows if all(row.get("status") == "connected" for row in rows) else None

        rows = await _until(connected, "both handoffs connected", 12)
        reached = sorted(row["to"] for row in rows)
        assert reached == sorted([limited.uri, spare.uri]), rows
        busy = next(row for row in rows if row["to"] == spare.uri)
        failed = [e for e in busy["events"] if e["kind"] == "attempt_failed"]
        assert failed and "486" in str(failed[0]), busy["events"]

        # the screen-pop of B's handoff, opened on node A with its own token only
        pop = rows[0]["screen_pop"]
        token = pop.split("token=")[1]
        context = f"/handoffs/{handoff_b}/context"
        for client in (a, b):
            opened = await client.get(context, params={"token": token}, headers={
                "Authorization": ""})
            assert opened.status_code == 200, opened.text
            assert opened.json()["packet"]["intent"]["name"] == "billing"
        wrong = await a.get(context, params={"token": "guess"}, headers={"Authorization": ""})
        assert wrong.status_code == 401

        # Redis goes away mid-call: each node still serves its own call, ready but degraded
        redis.stop()

        async def degraded() -> dict[str, Any] | None:
            ready = await b.get("/readyz")
            body = ready.json()
            return body if ready.status_code == 200 and body["degraded"] == ["redis"] \
                else None

        status = await _until(degraded, "node B reports redis down")
        assert status["checks"]["redis"] is False and status["ready"] is True
        assert [c["id"] for c in (await b.get("/calls")).json()] == [on_b]
        cut_off = await a.post(f"/calls/{on_b}/hangup")
        assert cut_off.status_code == 503 and "Redis" in cut_off.text
        anonymous = await a.post(f"/calls/{on_b}/hangup", headers={"Authorization": ""})
        assert anonymous.status_code == 401  # told nothing about Redis
        redis.start()  # back, empty: the nodes register their live calls again

        async def relisted() -> bool:
            calls = (await a.get("/calls")).json()
            return any(call["id"] == on_b and call["node"] == "b" for call in calls)

        await _until(relisted, "node B's call listed on node A after Redis returned")

        # node A ends the call living on node B, and node B the one on node A
        ended = await asyncio.gather(a.post(f"/calls/{on_b}/hangup"),
                                     b.post(f"/calls/{on_a}/hangup"))
        assert [r.status_code for r in ended] == [202, 202], [r.text for r in ended]
        assert ended[0].headers["x-warmline-node"] == "b"
    for n, peer in enumerate([*callers, *humans]):
        result = await peer
        assert result.returncode == 0, f"peer {n}: " + result.output[-3000:]


def test_on_one_node_without_redis_a_human_at_his_limit_is_busy(tmp_path: Path) -> None:
    """The same limit in memory: the human already has his one call (a hold taken
    before), so the transfer skips him as busy (486, never rung) and the fallback
    takes the caller; once the call ends its hold on the fallback is released."""
    from tests.interop.transfer_peers import human_hangs_up, kinds, run_transfer
    from warmline.calls.call import Call
    from warmline.cluster.limits import LimitTable, LocalLimits, destination_key
    from warmline.transfer.handoff import Destination, Handoff

    occupied = f"sip:human@127.0.0.1:{free_port()}"  # nothing listens: never rung
    spare = Human("human_answers.xml", {"ring_ms": "100", "tail": human_hangs_up(600)})
    limits = LocalLimits()
    assert limits.take(destination_key(occupied), 1) is not None

    def make(call: Call) -> Handoff:
        return Handoff(call.id, Destination(occupied, "bridge", 5),
                       fallback=[Destination(spare.uri, "bridge", 5)])

    outcome = asyncio.run(run_transfer(
        tmp_path, WAIT_FOR_BYE, make, [spare],
        engine_options={"limits": limits, "limit_table": LimitTable(1)}))
    handoff = outcome.handoff
    failed = next(e for e in handoff.events if e.kind == "attempt_failed")
    assert failed.detail.get("sip_status") == 486, failed.detail
    assert "connected" in kinds(handoff) and handoff.attempt is not None \
        and handoff.attempt.uri == spare.uri
    assert limits.held(destination_key(occupied)) == 1  # still his other call's
    assert limits.held(destination_key(spare.uri)) == 0  # released when the leg ended
