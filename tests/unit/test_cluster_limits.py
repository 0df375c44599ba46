"""[cluster] and the concurrency limits on one node (no Redis): the same meaning as shared.

The Redis side (leases across nodes, their expiry, the registry) is tested against a real
redis-server in tests/interop/test_cluster.py.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from warmline.cluster.limits import LimitTable, LocalLimits, destination_key
from warmline.config import ConfigError, load


def test_one_destination_is_one_key_however_its_uri_is_written() -> None:
    keys = {destination_key(uri) for uri in (
        "sip:Ann@pbx.example", "<sip:ann@PBX.example>", "sip:ann@pbx.example;transport=tcp",
        "sip:ann@pbx.example?X-Warmline-Handoff=1", " sip:ann@pbx.example ")}
    assert keys == {"sip:ann@pbx.example"}
    assert destination_key("sip:bob@pbx.example") != destination_key("sip:ann@pbx.example")


def test_the_table_gives_each_destination_its_own_limit_or_the_default() -> None:
    table = LimitTable(2, {"sip:ann@pbx.example": 1}, {"carrier": 30})
    assert table.for_destination("<sip:Ann@pbx.example;transport=udp>") == 1
    assert table.for_destination("sip:queue@pbx.example") == 2
    assert table.for_trunk("carrier") == 30 and table.for_trunk("other") == 0
    assert table.any and not LimitTable().any


def test_local_holds_cap_each_key_and_come_back_when_released() -> None:
    async def run() -> None:
        limits = LocalLimits()
        first = await limits.acquire("sip:ann@pbx", 1)
        assert first is not None and not first.shared
        assert await limits.acquire("sip:ann@pbx", 1) is None  # busy: one call at a time
        other = await limits.acquire("sip:bob@pbx", 1)  # another human is not affected
        assert other is not None
        await limits.release(first)
        await limits.release(first)  # twice changes nothing
        again = await limits.acquire("sip:ann@pbx", 1)
        assert again is not None and limits.held("sip:ann@pbx") == 1
        two = [await limits.acquire("queue", 2) for _ in range(3)]
        assert [hold is not None for hold in two] == [True, True, False]

    asyncio.run(run())


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "warmline.toml"
    path.write_text(text)
    return path


def test_the_config_builds_the_limits_and_the_cluster(tmp_path: Path) -> None:
    config = load(write(tmp_path, """
[transfer]
max_calls_per_destination = 1
[cluster]
node_id = "node-a"
redis = "redis://127.0.0.1:6399/0"
api_url = "http://10.0.0.5:8080"
[trunks.carrier]
uri = "sip:sip.carrier.example"
max_calls = 30
[[departments]]
name = "billing"
[[departments.destinations]]
uri = "sip:queue@pbx.example"
max_calls = 5
ring_with = ["sip:Ann@pbx.example"]
"""))
    table = config.limit_table()
    assert table.per_destination == 1 and table.for_trunk("carrier") == 30
    assert table.for_destination("sip:ann@pbx.example") == 5
    assert table.for_destination("sip:other@pbx.example") == 1
    cluster = config.cluster.settings("http://127.0.0.1:8080")
    assert cluster is not None and cluster.node_id == "node-a"
    assert cluster.api_url == "http://10.0.0.5:8080" and cluster.entry_ttl == 6.0


def test_without_redis_the_node_stands_alone_under_a_default_name(tmp_path: Path) -> None:
    config = load(write(tmp_path, "[cluster]\nheartbeat = 1\n"))
    assert config.cluster.settings("http://127.0.0.1:8080") is None
    named = load(write(tmp_path, '[cluster]\nredis = "redis://r:6379"\n'))
    cluster = named.cluster.settings("http://127.0.0.1:8080")
    assert cluster is not None and "-" in cluster.node_id  # hostname-pid
    assert cluster.api_url == "http://127.0.0.1:8080"  # the node's own API by default


@pytest.mark.parametrize(("text", "named"), [
    ('[cluster]\nredis = "http://127.0.0.1:6379"\n', "cluster.redis"),
    ('[cluster]\napi_url = "ftp://x"\n', "cluster.api_url"),
    ('[cluster]\nnode_id = "a b"\n', "cluster.node_id"),
    ('[cluster]\nheartbeat = 0\n', "cluster.heartbeat"),
    ('[cluster]\nredis = "redis://:hunter2@r:6379"\n', "password_env"),
    ('[cluster]\npassword = "hunter2"\n', "cluster: Value error, password: secrets"),
    ('[cluster]\nredis = "redis://r"\npassword_env = "WL_NO_SUCH_VAR"\n',
     "cluster.password_env: WL_NO_SUCH_VAR is not set"),
    ('[cluster]\nnodes = 3\n', "cluster.nodes"),
    ('[transfer]\nmax_calls_per_destination = -1\n', "transfer.max_calls_per_destination"),
    ('[trunks.t]\nuri = "sip:t.example"\nmax_calls = -2\n', "trunks.t.max_calls"),
    ('[cluster]\nworkers = 2\nredis = "redis://r"\nnode_id = "a"\n', "node_id: with workers"),
    ('[cluster]\nworkers = 2\nredis = "redis://r"\napi_url = "http://h:1"\n',
     "api_url: with workers"),
])
def test_a_bad_cluster_key_is_named(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load(write(tmp_path, text))
    assert named in str(caught.value), caught.value


def test_the_call_control_takes_the_limits_and_answers_busy_at_them(tmp_path: Path) -> None:
    """transfer/live.py: a destination at its limit is a leg failed 486 (never dialled), a
    trunk at its limit 503; the hold goes when the dialled leg fails."""
    from types import SimpleNamespace
    from typing import Any

    from warmline.calls.trunks import Trunk, Trunks
    from warmline.sip.session import CallFailed
    from warmline.sip.uri import SipUri
    from warmline.transfer.callbacks import CallbackBook
    from warmline.transfer.control import LegFailed, TransferEvent
    from warmline.transfer.live import LiveCallControl, TransferServices

    async def run() -> None:
        dialled: list[str] = []
        never = asyncio.get_running_loop().create_future()

        async def dial(call: Any, uri: str, *rest: Any) -> Any:
            dialled.append(uri)
            return await never  # rings until the test ends

        trunks = Trunks((Trunk("carrier", SipUri(host="carrier.example")),))
        switchboard: Any = SimpleNamespace(trunks=trunks, dial=dial)
        limits = LocalLimits()
        services = TransferServices(
            tts=None, hold_audio=list, deliver=None, records_dir=tmp_path,  # type: ignore
            callbacks=CallbackBook(tmp_path / "cb.jsonl"), limits=limits,
            limit_table=LimitTable(1, {}, {"carrier": 1}))
        control = LiveCallControl(switchboard, SimpleNamespace(caller=None),  # type: ignore
                                  services)
        events: list[TransferEvent] = []
        control.sink = events.append
        identity: Any = SimpleNamespace(from_=None, headers=[])
        first = control.dial("sip:ann@pbx.example", identity, [])
        second = control.dial("sip:Ann@pbx.example;transport=tcp", identity, [])
        third = control.dial("sip:+15550100@carrier.example", identity, [])
        fourth = control.dial("sip:+15550199@carrier.example", identity, [])
        for _ in range(5):
            await asyncio.sleep(0)
        assert dialled == ["sip:ann@pbx.example", "sip:+15550100@carrier.example"]
        failed = {event.leg: event.status for event in events if isinstance(event, LegFailed)}
        assert failed == {second: 486, fourth: 503}
        assert limits.held("sip:ann@pbx.example") == 1 and limits.held("trunk:carrier") == 1
        session: Any = None
        control._leg_event(first, CallFailed(session, 486, "Busy Here"))
        control._leg_event(third, CallFailed(session, 480, "Unavailable"))
        for _ in range(3):
            await asyncio.sleep(0)
        assert limits.held("sip:ann@pbx.example") == 0 and limits.held("trunk:carrier") == 0
        never.cancel()
        await control.close()

    asyncio.run(run())
