"""rtpengine as the media plane, against a real rtpengine 10.5 (userspace forwarding).

1. The engine's transfer path on `RtpenginePlane`: a sipp caller streams speech,
   hears an AI prompt, then hold audio, then a bridge transfer to a baresip human
   who speaks back. tshark at the caller's port: every packet comes from
   rtpengine, one stream, no gap over 60 ms at either switch; baresip heard the
   caller; the human's audio reached the caller's leg; rtpengine's own counters
   show media both ways on both anchored legs.
2. `warmline serve` with `[media] plane = "rtpengine"`: a call's SDP names
   rtpengine's port; once rtpengine stops answering, the next call gets 503
   with the reason (never a ringing hang) and /readyz says media_plane false.
"""

from __future__ import annotations

import asyncio
import re
import time
from itertools import pairwise
from pathlib import Path

import httpx
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
    stop_process,
    stop_serve,
)
from tests.interop.rtpengine_peer import rtpengine
from tests.interop.test_hostile import call_from, header, serve_with
from tests.interop.test_media_bridge import speech_onsets
from warmline.calls.call import Call
from warmline.engine import CallEngine
from warmline.media.ng import NgClient
from warmline.media.player import Player
from warmline.media.relay import EmbeddedRelay, PortRange
from warmline.media.rtpengine import RtpengineLeg, RtpenginePlane
from warmline.media.tts import EspeakTts
from warmline.transfer.handoff import Destination, Handoff

pytestmark = pytest.mark.interop


def test_ai_then_hold_then_a_bridged_human_through_rtpengine(tmp_path: Path) -> None:
    caller_speech, human_speech = speech_files(
        tmp_path, "I would like to talk to somebody about my bill, please. " * 3)
    media_port = free_port() // 2 * 2
    scenario = render_scenario("caller_rtp_stream.xml", tmp_path, audio=str(caller_speech),
                               seconds="6000")
    prompt = EspeakTts().synthesize("One moment, I will connect you with a person.")
    handoffs: list[Handoff] = []
    seen: dict[str, object] = {}

    async def call(human_uri: str, ng_port: int) -> None:
        base = relay_block()
        plane = RtpenginePlane(NgClient("127.0.0.1", ng_port),
                               EmbeddedRelay("127.0.0.1", PortRange(base, base + 40)))
        async with engine("udp") as running:
            def on_call(call: Call) -> None:
                feed = call.caller.media.play(Player(prompt))

                def transfer(_: object) -> None:
                    destination = Destination(human_uri, "bridge", 10)
                    handoffs.append(calls.transfer(call.id, Handoff(call.id, destination)))

                feed.done.add_done_callback(transfer)

            calls = CallEngine(running.shell, plane, "127.0.0.1", ["PCMU", "PCMA"], on_call,
                               records_dir=tmp_path / "records")
            sipp = asyncio.ensure_future(run_sipp(
                ["-sf", str(scenario), f"127.0.0.1:{running.spec.port}", "-p", str(free_port()),
                 "-mi", "127.0.0.1", "-mp", str(media_port), "-m", "1"], tmp_path, timeout=30))
            while not (handoffs and handoffs[0].status == "connected") and not sipp.done():
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.5)  # bridged: both talk for a while
            legs = list(plane.legs.values())
            seen["legs"] = [(leg.inner.label, leg.local.port, leg.counters.received,
                             leg.counters.sent) for leg in legs]
            seen["rtpengine"] = [await _stream_packets(plane, leg) for leg in legs]
            result = await sipp
            await asyncio.sleep(0.5)
            assert result.returncode == 0, result.output[-3000:]
            assert not plane.legs  # both legs closed when the caller hung up
            await calls.close()
            await plane.close()

    with rtpengine(tmp_path) as rtpe, \
            baresip(tmp_path, human_speech, "PCMU/8000/1") as human, \
            capture_udp(tmp_path, media_port) as pcap:
        asyncio.run(call(human.uri, rtpe.ng_port))
        ports = rtpe.ports
    [handoff] = handoffs
    kinds = [event.kind for event in handoff.events]
    assert "connected" in kinds and "human_first_word" in kinds, kinds
    assert handoff.status == "completed"
    legs = seen["legs"]
    assert isinstance(legs, list) and {label for label, *_ in legs} == {"caller", "human"}
    assert all(port in ports for _, port, _, _ in legs), legs  # the public RTP is rtpengine's
    assert all(received > 50 and sent > 50 for _, _, received, sent in legs), legs
    assert all(to_far > 50 and from_far > 50 for to_far, from_far in seen["rtpengine"]), seen
    arrivals = rtp_arrivals(pcap, media_port)
    assert len(arrivals) > 200
    assert len({ssrc for _, ssrc, _ in arrivals}) == 1
    largest_gap = max(b - a for (a, _, _), (b, _, _) in pairwise(arrivals))
    print(f"caller: {len(arrivals)} packets, largest gap {largest_gap * 1000:.1f} ms")
    assert largest_gap < 0.060, f"the caller heard a {largest_gap * 1000:.0f} ms gap"
    assert speech_onsets(human.recording()) > 50


async def _stream_packets(plane: RtpenginePlane, leg: RtpengineLeg) -> tuple[int, int]:
    """rtpengine's own count of RTP packets (to the far end, from the far end) of ``leg``."""
    reply = await plane.client.command("query", **{"call-id": leg.call_id})
    tags = reply["tags"]
    assert isinstance(tags, dict)

    def rtp_packets(tag: str) -> int:
        monologue = tags[tag]
        assert isinstance(monologue, dict)
        [media] = monologue["medias"]  # type: ignore[misc]
        stream = media["streams"][0]  # type: ignore[index]
        return int(stream["stats"]["packets"])  # type: ignore[index]

    # what arrives on the relay-facing port goes to the far end, and vice versa
    return rtp_packets("relay"), rtp_packets("far")


SERVE_CONFIG = """
[sip]
trusted = ["127.0.0.1/32"]
[media]
ports = "@MEDIA@"
plane = "rtpengine"
rtpengine = "@NG@"
"""


def test_serve_on_rtpengine_answers_then_refuses_503_when_rtpengine_is_gone(
        tmp_path: Path) -> None:
    with rtpengine(tmp_path) as rtpe:
        server, port, http = serve_with(tmp_path, SERVE_CONFIG.replace("@NG@", rtpe.address))
        try:
            first, answer = call_from(port, "127.0.0.1", "rtpe1")
            assert answer.startswith("SIP/2.0 200"), answer
            announced = int(re.search(r"m=audio (\d+)", answer).group(1))  # type: ignore[union-attr]
            assert announced in rtpe.ports, answer
            assert httpx.get(f"http://127.0.0.1:{http}/readyz").json()["checks"][
                "media_plane"] is True
            stop_process(rtpe.process, timeout=5)
            began = time.monotonic()
            second, refused = call_from(port, "127.0.0.1", "rtpe2")
            waited = time.monotonic() - began
            assert refused.startswith("SIP/2.0 503"), refused
            assert "did not answer" in (header(refused, "Warning") or ""), refused
            assert waited < 3.0, f"refused after {waited:.1f} s"
            ready = httpx.get(f"http://127.0.0.1:{http}/readyz")
            assert ready.status_code == 503 and ready.json()["checks"]["media_plane"] is False
            first.close()
            second.close()
        finally:
            assert stop_serve(server) == 0
    log = server.log()  # type: ignore[attr-defined]
    assert "Traceback" not in log and "rtpengine" in log
