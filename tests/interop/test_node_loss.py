"""A call survives the loss of its node: `kill -9` of node A, node B takes its calls over.

Two `warmline serve --http` nodes share a redis-server (heartbeat 0.5 s); the callers
reach node A through the shipped Kamailio config (it record-routes). Three PJSIP phones,
real UAs that honour a target refresh: caller 1 (a 700 Hz tone) is bridged by node A to
a human (1,300 Hz); caller 2 is with the AI (hold audio). Node A is killed with SIGKILL.
Node B sees A's beat expire and adopts both calls (cluster/takeover.py,
calls/adoption.py): a re-INVITE to each far end with B's Contact and B's media (the
callers' through Kamailio, by their route set). Then: both calls are listed by B under
their old ids; the bridged pair hears each other through B; caller 2 hears B's hold
audio, and its own BYE reaches B (the target refresh worked, Kamailio routed it to B);
node A restarted on the same records leaves the dialogs B took alone (no BYE from its
journal); B's API hangs up the bridged call, which ends both phones' calls with a BYE.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.interop.kamailio import shipped_kamailio
from tests.interop.peers import (
    ServeProcess,
    free_port,
    relay_block,
    start_serve,
    stop_serve,
    wait_for_log,
)
from tests.interop.pjsip_phone import PjsipPhone, pjsip_phone
from tests.interop.redis_peer import RedisPeer, redis_server
from tests.interop.test_cluster_nodes import _until
from tests.interop.test_pipecat import tone_share

pytestmark = pytest.mark.interop
TOKEN = "node-loss-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
CALLER_HZ, HUMAN_HZ = 700, 1300


def _node(workdir: Path, name: str, redis: RedisPeer, sip: int | None = None,
          http: int | None = None, media: int | None = None
          ) -> tuple[ServeProcess, tuple[int, int, int]]:
    workdir.mkdir(exist_ok=True)
    sip, http, media = sip or free_port(), http or free_port(), media or relay_block()
    (workdir / "token").write_text(TOKEN)
    (workdir / "warmline.toml").write_text(
        f'[cluster]\nnode_id = "{name}"\nredis = "{redis.url}"\nheartbeat = 0.5\n'
        f'prefix = "wl"\n')
    server = start_serve(["--config", "warmline.toml", "--sip", f"udp:127.0.0.1:{sip}",
                          "--http", f"127.0.0.1:{http}", "--api-token-file", "token",
                          "--media-ports", f"{media}-{media + 40}"], workdir)
    wait_for_log(server, "cluster: Redis answers", timeout=15)
    return server, (sip, http, media)


def test_killed_nodes_calls_go_on_at_another_node(tmp_path: Path) -> None:
    with redis_server(tmp_path) as redis, contextlib.ExitStack() as stack:
        node_a, ports_a = _node(tmp_path / "a", "a", redis)
        node_b, ports_b = _node(tmp_path / "b", "b", redis)
        proxy = stack.enter_context(shipped_kamailio(
            tmp_path / "kamailio", [f"sip:127.0.0.1:{ports_a[0]}"], children=1))
        dial_a = f"sip:ai@127.0.0.1:{proxy.port}"  # Kamailio knows node A only
        wavs = {name: tmp_path / f"{name}.wav" for name in ("human", "caller1", "caller2")}
        restarted: list[ServeProcess] = []
        try:
            with pjsip_phone(tmp_path / "human", free_port(), tone_hz=HUMAN_HZ,
                             record=wavs["human"], lifetime=45) as human, \
                    pjsip_phone(tmp_path / "caller1", free_port(), dial=dial_a,
                                tone_hz=CALLER_HZ, record=wavs["caller1"], user="caller1",
                                lifetime=45) as caller1, \
                    pjsip_phone(tmp_path / "caller2", free_port(), dial=dial_a,
                                record=wavs["caller2"], user="caller2",
                                hangup_after_ms=11_000, lifetime=45) as caller2:
                phones = {"human": human, "caller1": caller1, "caller2": caller2}
                asyncio.run(_drive(tmp_path, redis, node_a, ports_a, ports_b, phones,
                                   restarted))
                for phone in phones.values():
                    assert phone.wait("done", timeout=10)["code"] == 0, phone.text()[-2000:]
        finally:
            for node in (node_a, node_b, *restarted):
                if node.process.poll() is None:
                    stop_serve(node)
        log_b = node_b.log()
        assert "stopped beating with 2 call(s) up; taking them over" in log_b, log_b[-3000:]
        # B's re-INVITEs to the callers went by their route set, through Kamailio; caller
        # 2's BYE came back through Kamailio to B (its Contact now)
        routed = [(t.fields.get("method"), t.fields.get("src"), t.fields.get("ruri", ""))
                  for t in proxy.traces("in-dialog")]
        b_address = f"127.0.0.1:{ports_b[0]}"
        assert sum(1 for m, src, _ in routed if m == "INVITE" and src == b_address) == 2, routed
        assert any(m == "BYE" and ruri.endswith(b_address) for m, _, ruri in routed), routed
    for name, phone in phones.items():  # each phone's stream moved to node B (re-INVITE)
        assert len({e["port"] for e in phone.events("media")}) >= 1, name
        assert len(phone.events("media")) >= 2, (name, phone.text()[-2000:])
    # the caller's tone reached the human all along but for the takeover: A's beat
    # expiring (1.5 s), B's next look (<= 0.5 s) and the re-INVITEs
    gap = _longest_silence(wavs["human"])
    print(f"the human's longest silence: {gap:.2f} s")
    assert gap < 2.5
    # the last two seconds each phone heard came through node B
    assert _share(wavs["human"], CALLER_HZ) > 0.3
    assert _share(wavs["caller1"], HUMAN_HZ) > 0.3
    assert _loudness(wavs["caller2"]) > 300  # B's hold audio, not silence
    for name in ("human", "caller1"):  # hung up by B's API: a BYE, not a timeout
        assert phones[name].states()[-1][0] == "DISCONNECTED", phones[name].states()


async def _drive(tmp_path: Path, redis: RedisPeer, node_a: ServeProcess,
                 ports_a: tuple[int, int, int], ports_b: tuple[int, int, int],
                 phones: dict[str, PjsipPhone], restarted: list[ServeProcess]) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports_a[1]}", headers=AUTH,
                                 timeout=10) as a, \
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{ports_b[1]}", headers=AUTH,
                              timeout=10) as b:
        calls = await _until(lambda: _calls_of(a, "a", 2), "node A holds both calls", 10)
        by_caller = {call["from"].split("@")[0].split(":")[-1]: call["id"] for call in calls}
        bridged, with_ai = by_caller["caller1"], by_caller["caller2"]
        answer = await a.post(f"/calls/{bridged}/transfer", json={
            "to": phones["human"].uri, "mode": "bridge", "timeout": 10})
        assert answer.status_code == 202, answer.text
        await _until(lambda: _state_is(a, bridged, "human"), "caller 1 bridged on node A")
        await asyncio.sleep(1.0)

        stop_serve(node_a, signal.SIGKILL)
        killed = time.monotonic()
        await _until(lambda: _calls_of(b, "b", 2), "node B holds both calls", 10)
        took = time.monotonic() - killed
        print(f"node B took both calls over {took:.2f} s after node A's kill -9")
        assert took < 4.0  # three 0.5 s beats and the first look after them
        assert (await b.get(f"/calls/{bridged}")).json()["state"] == "human"

        # node A again, same name and records: its journal lists the dialogs B took
        workdir = tmp_path / "a"
        again, _ = _node(workdir, "a", redis, *ports_a)
        restarted.append(again)
        wait_for_log(again, "were taken over by another node; leaving them to it")
        await asyncio.sleep(2.5)  # both pairs talk through B; caller 2 hangs up itself
        await _until(lambda: _state_is(b, with_ai, "ended"), "caller 2's BYE reached B", 8)
        done = await b.post(f"/calls/{bridged}/hangup")
        assert done.status_code in (200, 202), done.text
        await _until(lambda: _state_is(b, bridged, "ended"), "B hung up the bridged call")


async def _calls_of(client: httpx.AsyncClient, node: str, count: int
                    ) -> list[dict[str, Any]] | None:
    try:
        calls = [c for c in (await client.get("/calls")).json() if c.get("node") == node
                 and c["state"] != "ended"]
    except httpx.HTTPError:
        return None
    return calls if len(calls) == count else None


async def _state_is(client: httpx.AsyncClient, call_id: str, state: str) -> bool:
    reply = await client.get(f"/calls/{call_id}")
    return reply.status_code == 200 and reply.json().get("state") == state


def _samples(path: Path, seconds: float = 2.0) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as wav:
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    return samples[-int(rate * seconds):], rate


def _share(path: Path, hz: int) -> float:
    samples, rate = _samples(path)
    return tone_share(samples, hz, rate)


def _longest_silence(path: Path) -> float:
    """Seconds of the longest run of 20 ms frames below an RMS of 200 in a recording."""
    samples, rate = _samples(path, seconds=3600)
    size = rate // 50
    frames = samples[:len(samples) // size * size].astype(np.float64).reshape(-1, size)
    quiet = np.sqrt((frames ** 2).mean(axis=1)) < 200
    longest = run = 0
    for frame_is_quiet in quiet:
        run = run + 1 if frame_is_quiet else 0
        longest = max(longest, run)
    return longest / 50


def _loudness(path: Path) -> float:
    samples, _ = _samples(path)
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))
