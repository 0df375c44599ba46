"""The cluster's shared state against a real redis-server: limits across nodes, the call
registry, expiry of a dead node's entries, and a Redis that goes away and comes back empty."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from tests.interop.redis_peer import redis_server
from warmline.cluster.limits import LocalLimits, RedisLimits
from warmline.cluster.registry import SharedState, connect
from warmline.cluster.settings import ClusterSettings
from warmline.cluster.takeover import OrphanCall, inherit

pytestmark = pytest.mark.interop


def test_a_limit_holds_across_nodes_and_a_dead_nodes_holds_expire(tmp_path: Path) -> None:
    async def run(url: str) -> None:
        node_a = RedisLimits(connect(url), "t", lease_seconds=0.6)
        node_b = RedisLimits(connect(url), "t", lease_seconds=0.6)
        # 20 attempts at once from two nodes on a queue that takes 3: exactly 3 get in
        holds = await asyncio.gather(*[(node_a if n % 2 else node_b).acquire("queue", 3)
                                       for n in range(20)])
        taken = [hold for hold in holds if hold is not None]
        assert len(taken) == 3 and all(hold.shared for hold in taken)
        # one human, limit 1: node A has him, node B finds him busy until A lets go
        ann = await node_a.acquire("sip:ann@pbx", 1)
        assert ann is not None and await node_b.acquire("sip:ann@pbx", 1) is None
        await node_a.release(ann)
        bobs = await node_b.acquire("sip:ann@pbx", 1)
        assert bobs is not None
        # node B keeps renewing (its heartbeat): the hold outlives its lease
        for _ in range(4):
            await asyncio.sleep(0.25)
            await node_b.renew()
        assert await node_a.acquire("sip:ann@pbx", 1) is None
        # node B dies (no more renewals): its hold expires on its own
        await asyncio.sleep(0.8)
        assert await node_a.acquire("sip:ann@pbx", 1) is not None
        for limits in (node_a, node_b):
            await limits.client.aclose()

    with redis_server(tmp_path) as redis:
        asyncio.run(run(redis.url))


def _settings(node: str, redis: str, heartbeat: float = 0.3) -> ClusterSettings:
    return ClusterSettings(node, redis, f"http://127.0.0.1:1/{node}", "t", heartbeat, 60)


def test_the_registry_through_an_outage_and_a_redis_that_lost_everything(
        tmp_path: Path) -> None:
    calls_b: list[dict[str, Any]] = [{"id": "call-1", "state": "ai"}]
    handoffs_b: list[dict[str, Any]] = [{"id": "handoff-1", "token": "t0k", "packet": {}}]
    promises_b: list[dict[str, Any]] = [{"handoff_id": "handoff-0", "state": "pending"}]

    async def wait_until(check: Any, seconds: float = 5.0) -> None:
        for _ in range(int(seconds / 0.05)):
            if await check():
                return
            await asyncio.sleep(0.05)
        raise AssertionError("not within the time")

    async def run() -> None:
        a = SharedState(_settings("a", redis.url), connect(redis.url), list, list)
        b = SharedState(_settings("b", redis.url), connect(redis.url),
                        lambda: calls_b, lambda: handoffs_b,
                        RedisLimits(connect(redis.url), "t", 1.0), lambda: promises_b)
        a.start()
        b.start()

        async def listed() -> bool:
            return a.available and [c["id"] for c in await a.calls()] == ["call-1"]

        await wait_until(listed)
        owner = await a.owner("call-1")
        assert owner is not None and owner.node == "b" and owner.api_url.endswith("/b")
        assert (await a.calls())[0]["node"] == "b"
        assert set(await a.nodes()) == {"a", "b"}
        b.handoff_changed(handoffs_b[0])
        b.callback_changed({"handoff_id": "handoff-0", "state": "dialling"})
        b.call_changed({"id": "call-2", "state": "ai"})
        b.call_gone("call-2")  # in order: the end never overtakes the start

        async def published() -> bool:
            return (await a.handoff("handoff-1") or {}).get("token") == "t0k"

        await wait_until(published)
        assert await a.owner("call-2") is None
        assert await a.callbacks() == [{"handoff_id": "handoff-0", "state": "dialling",
                                        "node": "b"}]

        redis.stop()  # the outage: node B keeps its call; its registry says Redis is gone
        await wait_until(lambda: _false(b))
        b.call_changed({"id": "call-3"})  # dropped, not queued without bound
        redis.start()  # back, and empty: node B re-registers what is live

        async def back() -> bool:
            try:
                return b.available and await a.owner("call-1") is not None \
                    and await a.handoff("handoff-1") is not None \
                    and len(await a.callbacks()) == 1
            except Exception:
                return False

        await wait_until(back)
        for task in b._tasks:  # node B dies without a word: its beat stops ...
            task.cancel()
        await asyncio.sleep(1.2)  # ... and its entries expire (3 beats, 1 s at least)
        assert await a.calls() == [] and await a.owner("call-1") is None
        assert set(await a.nodes()) == {"a"}
        await a.close()  # a clean stop takes this node's entries out at once
        probe = connect(redis.url)
        assert not await probe.exists("t:node:a")
        await probe.aclose()
        await b.client.aclose()

    with redis_server(tmp_path) as redis:
        asyncio.run(run())


async def _false(state: SharedState) -> bool:
    return not state.available


def test_a_limit_counts_on_this_node_while_redis_is_unreachable(tmp_path: Path) -> None:
    async def run(url: str) -> None:
        limits = RedisLimits(connect(url), "t", 1.0, LocalLimits())
        hold = await limits.acquire("sip:ann@pbx", 1)
        assert hold is not None and not hold.shared  # counted here, not refused
        assert await limits.acquire("sip:ann@pbx", 1) is None
        await limits.release(hold)
        assert await limits.acquire("sip:ann@pbx", 1) is not None
        await limits.client.aclose()

    with redis_server(tmp_path) as redis:
        url = redis.url
    asyncio.run(run(url))  # the server has stopped: nothing answers on its port


def test_a_silent_nodes_calls_go_to_exactly_one_heir_and_it_lets_them_go(
        tmp_path: Path) -> None:
    """Node A stalls past its TTL (as a kill -9 or a long pause looks from outside): of
    two live nodes looking at once exactly one inherits its call, with the dialog entry
    A wrote, and its open callback promise (not the kept one); when A beats again it
    learns which of its dialogs and promises were taken, and by whom, even when Redis
    fails the first time it asks. While A beats, an heir that looks takes nothing."""
    leg = {"memo_key": "c9;l1", "memo": "{}", "call": "call-9", "role": "caller"}
    promises = [{"handoff_id": "h-open", "state": "pending", "attempts": 1},
                {"handoff_id": "h-kept", "state": "kept", "attempts": 1}]
    inherited: dict[str, list[OrphanCall]] = {"b": [], "c": []}
    promised: dict[str, list[dict[str, Any]]] = {"b": [], "c": []}
    let_go: list[dict[str, str]] = []
    handed: list[dict[str, str]] = []

    async def run() -> None:
        calls_a = [{"id": "call-9", "state": "human"}]
        legs_a = {"c9;l1": leg}
        a = SharedState(_settings("a", redis.url), connect(redis.url), lambda: calls_a, list,
                        callbacks=lambda: promises, legs=lambda: legs_a)
        heirs = [SharedState(_settings(name, redis.url), connect(redis.url), list, list)
                 for name in ("b", "c")]

        def lets_go(heirs: dict[str, str]) -> None:  # as the switchboard does: they end here
            let_go.append(heirs)
            for key in heirs:
                legs_a.pop(key)
            calls_a.clear()

        a.on_taken = lets_go
        a.on_taken_callbacks = handed.append
        a.open_promises = lambda: ["h-open"]
        for heir in heirs:
            heir.on_orphans = inherited[heir.node_id].extend
            heir.on_orphan_callbacks = promised[heir.node_id].extend
        for node in (a, *heirs):
            node.start()
        for _ in range(40):
            await asyncio.sleep(0.05)
            if all(node.available for node in (a, *heirs)):
                break
        assert not inherited["b"] and not inherited["c"]  # A beats: nothing to inherit
        early = await inherit(heirs[0].client, "t", "a", "b")  # asked anyway: refused
        assert not early.calls and not early.callbacks
        assert await a.client.hlen("t:legs:a") == 1
        a._tasks[0].cancel()  # A stalls: no beat for longer than its TTL (0.9 s)
        for _ in range(40):
            await asyncio.sleep(0.05)
            if inherited["b"] or inherited["c"]:
                break
        await asyncio.sleep(0.4)  # both heirs have looked by now
        [orphan] = inherited["b"] + inherited["c"]
        assert orphan.node == "a" and orphan.call_id == "call-9"
        assert orphan.call["state"] == "human" and orphan.legs == [leg]
        heir = "b" if inherited["b"] else "c"
        assert [row["handoff_id"] for row in promised[heir]] == ["h-open"]
        assert promised[heir][0]["node"] == "a" and not promised["c" if heir == "b" else "b"]
        assert await a.taken_of(["c9;l1", "c9;other", "callback:h-open"]) == {
            "c9;l1": heir, "callback:h-open": heir}
        asking = a.taken_of

        async def redis_fails(keys: list[str]) -> dict[str, str]:
            raise ConnectionError("Redis: the answer was lost")

        a.taken_of = redis_fails  # type: ignore[method-assign]
        with pytest.raises(ConnectionError):
            await a.beat()  # A wakes up: its entry had lapsed, but the question fails
        a.available = False  # as the beat loop says after that failure: the next rewrites
        a.taken_of = asking  # type: ignore[method-assign]
        await a.beat()  # asked again though the entry is fresh now
        assert let_go == [{"c9;l1": heir}] and handed == [{"h-open": heir}]
        # what A wrote back after the outage is what it still holds, not what it let go
        assert await a.client.hlen("t:legs:a") == 0 and await a.client.hlen("t:owned:a") == 0
        assert await a.client.get("t:call:call-9") is None
        await a.beat()  # said once
        assert len(let_go) == 1 and len(handed) == 1
        for node in (a, *heirs):
            await node.close()

    with redis_server(tmp_path) as redis:
        asyncio.run(run())


def test_a_promise_goes_by_its_taken_mark_and_odd_rows_do_not_break_an_inheritance(
        tmp_path: Path) -> None:
    """Node x died holding a promise it had itself inherited (its row still names the node
    before, a; the mark names x): x's heir takes it. A promise whose row names x but whose
    mark names another node was taken already: left. A row Redis's JSON reads but Python's
    does not (``01``) is skipped, not an error after the script has committed."""
    async def run(url: str) -> None:
        client = connect(url)
        await client.hset("t:callbacks", mapping={
            "h-inherited": '{"handoff_id": "h-inherited", "node": "a", "state": "pending"}',
            "h-taken": '{"handoff_id": "h-taken", "node": "x", "state": "pending"}',
            "h-odd": '{"handoff_id": "h-odd", "node": "x", "state": "pending", "n": 01}'})
        await client.set("t:taken:callback:h-inherited", "x")
        await client.set("t:taken:callback:h-taken", "z")
        await client.hset("t:owned:x", "call-1", '{"id": "call-1"}')
        await client.sadd("t:nodes", "x")
        inheritance = await inherit(client, "t", "x", "y")
        assert [row["handoff_id"] for row in inheritance.callbacks] == ["h-inherited"]
        assert [orphan.call_id for orphan in inheritance.calls] == ["call-1"]
        assert await client.get("t:taken:callback:h-inherited") == "y"
        assert await client.get("t:taken:callback:h-taken") == "z"
        assert not await client.sismember("t:nodes", "x")
        again = await inherit(client, "t", "x", "w")  # a second heir looking: nothing left
        assert not again.calls and not again.callbacks
        await client.aclose()

    with redis_server(tmp_path) as redis:
        asyncio.run(run(redis.url))
