"""The whole path through the call engine with real media: AI prompt, hold, the human.

A sipp caller streams speech; warmline's engine answers, plays an AI prompt,
then a transfer (bridge or warm, API-equivalent) reaches a baresip human who
auto-answers, hears a whisper in the warm case, and speaks. tshark measures
what the caller received: one stream, no gap over 60 ms across AI -> hold ->
human; baresip's recording holds the caller's speech; the handoff records
the human's first word.
"""

from __future__ import annotations

import asyncio
from itertools import pairwise
from pathlib import Path

import pytest

from tests.interop.peers import (
    baresip,
    capture_udp,
    engine,
    free_port,
    relay_block,
    render_scenario,
    rtp_arrivals,
    run_sipp,
    speech_files,
)
from tests.interop.test_media_bridge import speech_onsets
from warmline.calls.call import Call
from warmline.engine import CallEngine
from warmline.media.player import Player
from warmline.media.relay import EmbeddedRelay, PortRange
from warmline.media.tts import EspeakTts
from warmline.transfer.handoff import Destination, Handoff

pytestmark = pytest.mark.interop


@pytest.mark.parametrize("mode", ["bridge", "warm"])
def test_ai_then_hold_then_the_human_through_the_engine(mode: str, tmp_path: Path) -> None:
    caller_speech, human_speech = speech_files(
        tmp_path, "I would like to talk to somebody about my bill, please. " * 3)
    media_port = free_port() // 2 * 2
    scenario = render_scenario("caller_rtp_stream.xml", tmp_path, audio=str(caller_speech),
                               seconds="7000")
    prompt = EspeakTts().synthesize("One moment, I will connect you with a person.")
    handoffs: list[Handoff] = []

    async def call(human_uri: str) -> None:
        base = relay_block()
        relay = EmbeddedRelay("127.0.0.1", PortRange(base, base + 40))
        async with engine("udp") as running:
            def on_call(call: Call) -> None:
                feed = call.caller.media.play(Player(prompt))

                def transfer(_: object) -> None:
                    destination = Destination(human_uri, mode, 10, whisper="Maria, billing.")
                    handoffs.append(calls.transfer(call.id, Handoff(call.id, destination)))

                feed.done.add_done_callback(transfer)

            calls = CallEngine(running.shell, relay, "127.0.0.1", ["PCMU", "PCMA"], on_call,
                               records_dir=tmp_path / "records")
            result = await run_sipp(
                ["-sf", str(scenario), f"127.0.0.1:{running.spec.port}", "-p", str(free_port()),
                 "-mi", "127.0.0.1", "-mp", str(media_port), "-m", "1"], tmp_path, timeout=30)
            await asyncio.sleep(0.5)
            assert result.returncode == 0, result.output[-3000:]
            assert not relay.legs  # both legs closed when the caller hung up
            await calls.close()
            await relay.close()

    with baresip(tmp_path, human_speech, "PCMU/8000/1") as human, \
            capture_udp(tmp_path, media_port) as pcap:
        asyncio.run(call(human.uri))
    [handoff] = handoffs
    kinds = [event.kind for event in handoff.events]
    assert "connected" in kinds and "human_first_word" in kinds, kinds
    assert handoff.status == "completed"
    arrivals = rtp_arrivals(pcap, media_port)
    assert len(arrivals) > 250
    assert len({ssrc for _, ssrc, _ in arrivals}) == 1
    largest_gap = max(b - a for (a, _, _), (b, _, _) in pairwise(arrivals))
    assert largest_gap < 0.060, f"the caller heard a {largest_gap * 1000:.0f} ms gap"
    assert speech_onsets(human.recording()) > 50
