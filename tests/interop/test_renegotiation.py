"""A caller's phone (sipp) holds, resumes and re-offers; the engine answers and the relay obeys."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.interop.peers import engine, free_port, relay_block, render_scenario, run_sipp
from warmline.calls.call import Call
from warmline.engine import CallEngine
from warmline.media.player import Player, ringback
from warmline.media.relay import EmbeddedRelay, PortRange

pytestmark = pytest.mark.interop


def test_hold_resume_and_a_refused_re_offer_keep_the_call(tmp_path: Path) -> None:
    scenario = render_scenario("reinvite_hold.xml", tmp_path)
    samples: list[tuple[str, int]] = []  # (our direction, packets sent so far), every 50 ms
    calls: list[Call] = []

    def on_call(call: Call) -> None:
        calls.append(call)
        call.caller.media.play(Player(ringback(), loop=True))  # the AI talking, as it were

    async def watch() -> None:
        while True:
            await asyncio.sleep(0.05)
            if calls and calls[0].caller.negotiation.stream is not None:
                leg = calls[0].caller
                assert leg.negotiation.stream is not None
                samples.append((leg.negotiation.stream.direction, leg.media.counters.sent))

    async def scenario_run() -> None:
        base = relay_block()
        relay = EmbeddedRelay("127.0.0.1", PortRange(base, base + 40))
        async with engine("udp") as running:
            calls_engine = CallEngine(running.shell, relay, "127.0.0.1", ["PCMU", "PCMA"],
                                      on_call)
            watcher = asyncio.ensure_future(watch())
            result = await run_sipp(
                ["-sf", str(scenario), f"127.0.0.1:{running.spec.port}", "-p", str(free_port()),
                 "-mi", "127.0.0.1", "-mp", str(free_port()), "-m", "1"], tmp_path, timeout=20)
            await asyncio.sleep(0.2)
            watcher.cancel()
            assert result.returncode == 0, result.output[-3000:]
            assert calls and calls[0].ended
            assert not relay.legs  # the caller's leg closed with the call
            await calls_engine.close()
            await relay.close()

    asyncio.run(scenario_run())
    held = [sent for direction, sent in samples if direction == "recvonly"]
    assert len(held) >= 15, samples  # about a second on hold
    assert held[-1] - held[1] == 0  # nothing sent to a phone that holds us (after the switch)
    before = [sent for direction, sent in samples if direction == "sendrecv"]
    assert before[-1] - held[-1] >= 20  # sending again after the UPDATE resumed the call
