"""rtpengine as the media plane, against a real rtpengine 10.5 (userspace forwarding).

1. The engine's transfer path on `RtpenginePlane`: a sipp caller streams speech,
   hears an AI prompt, then hold audio, then a transfer to a human who answers;
   tshark at the caller's port: no gap over 60 ms at any switch. Bridge to a PJSIP
   human (a tone), with `rtpengine_bridge` on: once the human has spoken rtpengine
   bridges the pair itself, forwarding ~75 packets each way in 1.5 s while
   warmline's relay legs receive none, and goes on after every relay socket of
   warmline's is closed; the caller sees warmline's stream, then the human's own,
   and the human's recording holds the caller's speech after the hand-over. Warm to
   a baresip human (speech), with it off (the default): the media runs through the
   relay behind rtpengine, one stream at the caller, and baresip's recording holds
   the caller's speech.
2. `warmline serve` with `[media] plane = "rtpengine"`: a call's SDP names
   rtpengine's port; once rtpengine stops answering, the next call gets 503
   with the reason (never a ringing hang) and /readyz says media_plane false.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from itertools import pairwise
from pathlib import Path

import httpx
import numpy as np
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
from tests.interop.pjsip_phone import pjsip_phone
from tests.interop.rtpengine_peer import rtpengine
from tests.interop.test_hostile import call_from, header, serve_with
from tests.interop.test_media_bridge import speech_onsets
from warmline.calls.call import Call
from warmline.engine import CallEngine
from warmline.media.ng import NgClient
from warmline.media.player import Player, load_wav
from warmline.media.relay import EmbeddedRelay, PortRange
from warmline.media.rtpengine import RtpenginePlane
from warmline.media.tts import EspeakTts
from warmline.media.vad import FirstWordDetector
from warmline.transfer.handoff import Destination, Handoff

pytestmark = pytest.mark.interop
HUMAN_HZ = 440


@pytest.mark.parametrize(("mode", "handover"), [("bridge", True), ("warm", False)])
def test_ai_then_hold_then_a_bridged_human_through_rtpengine(mode: str, handover: bool,
                                                             tmp_path: Path) -> None:
    caller_speech, human_speech = speech_files(
        tmp_path, "I would like to talk to somebody about my bill, please. " * 3)
    media_port = free_port() // 2 * 2
    scenario = render_scenario("caller_rtp_stream.xml", tmp_path, audio=str(caller_speech),
                               seconds="8000")
    prompt = EspeakTts().synthesize("One moment, I will connect you with a person.")
    handoffs: list[Handoff] = []
    seen: dict[str, object] = {}

    async def call(human_uri: str, ng_port: int) -> None:
        base = relay_block()
        plane = RtpenginePlane(NgClient("127.0.0.1", ng_port),
                               EmbeddedRelay("127.0.0.1", PortRange(base, base + 40)),
                               bridge=handover)
        async with engine("udp") as running:
            def on_call(call: Call) -> None:
                feed = call.caller.media.play(Player(prompt))

                def transfer(_: object) -> None:
                    destination = Destination(human_uri, mode, 10, whisper="Maria, billing.")
                    handoffs.append(calls.transfer(call.id, Handoff(call.id, destination)))

                feed.done.add_done_callback(transfer)

            calls = CallEngine(running.shell, plane, "127.0.0.1", ["PCMU", "PCMA"], on_call,
                               records_dir=tmp_path / "records")
            plane.start()
            sipp = asyncio.ensure_future(run_sipp(
                ["-sf", str(scenario), f"127.0.0.1:{running.spec.port}", "-p", str(free_port()),
                 "-mi", "127.0.0.1", "-mp", str(media_port), "-m", "1"], tmp_path, timeout=30))
            def settled() -> bool:  # bridged and the human spoke (rtpengine took the pair)
                if handover:
                    return any(leg.direct for leg in plane.legs.values())
                return bool(handoffs) and "human_first_word" in [
                    event.kind for event in handoffs[0].events]

            while not settled() and not sipp.done():
                await asyncio.sleep(0.05)
            legs = list(plane.legs.values())
            await asyncio.sleep(0.3)  # what warmline had in flight
            relayed = [leg.inner.counters.received for leg in legs]
            forwarded = [await plane.far_counts(leg.call_id) for leg in legs]
            await asyncio.sleep(1.5)  # both talk
            seen["legs"] = [(leg.inner.label, leg.local.port, leg.direct is not None)
                            for leg in legs]
            seen["relayed"] = [leg.inner.counters.received - before
                               for leg, before in zip(legs, relayed, strict=True)]
            seen["forwarded"] = [(now[0] - then[0], now[1] - then[1]) for now, then in zip(
                [await plane.far_counts(leg.call_id) for leg in legs], forwarded, strict=True)]
            seen["watchdog_sees"] = [leg.counters.received for leg in legs]
            if handover:  # warmline's media gone (every relay socket closed): rtpengine alone
                before = [await plane.far_counts(leg.call_id) for leg in legs]
                await plane.relay.close()
                await asyncio.sleep(0.5)
                seen["without_warmline"] = [
                    (now[0] - then[0], now[1] - then[1]) for now, then in zip(
                        [await plane.far_counts(leg.call_id) for leg in legs], before,
                        strict=True)]
            result = await sipp
            await asyncio.sleep(0.5)
            assert result.returncode == 0, result.output[-3000:]
            assert not plane.legs  # both legs closed when the caller hung up
            await calls.close()
            await plane.close()

    heard = tmp_path / "human-heard.wav"
    with rtpengine(tmp_path) as rtpe, contextlib.ExitStack() as phones, \
            capture_udp(tmp_path, media_port) as pcap:
        if handover:  # PJSIP: the stack inside many softphones, facing the new stream
            human_uri = phones.enter_context(pjsip_phone(
                tmp_path / "human", free_port(), tone_hz=HUMAN_HZ, record=heard)).uri
        else:
            human_uri = phones.enter_context(
                baresip(tmp_path, human_speech, "PCMU/8000/1")).uri
        asyncio.run(call(human_uri, rtpe.ng_port))
        ports = rtpe.ports
    [handoff] = handoffs
    kinds = [event.kind for event in handoff.events]
    assert "connected" in kinds and "human_first_word" in kinds, kinds
    assert handoff.status == "completed"
    print(seen)
    legs = seen["legs"]
    assert isinstance(legs, list) and {label for label, *_ in legs} == {"caller", "human"}
    assert all(port in ports for _, port, _ in legs), legs  # the public RTP is rtpengine's
    # 1.5 s of talk both ways: 75 packets each way through rtpengine's anchors
    forwarded, relayed = seen["forwarded"], seen["relayed"]
    assert isinstance(forwarded, list) and all(got > 60 and sent > 60 for got, sent in forwarded)
    assert isinstance(relayed, list)
    arrivals = rtp_arrivals(pcap, media_port)
    assert len(arrivals) > 200
    streams = [ssrc for _, ssrc, _ in arrivals]
    largest_gap = max(b - a for (a, _, _), (b, _, _) in pairwise(arrivals))
    print(f"caller: {len(arrivals)} packets, largest gap {largest_gap * 1000:.1f} ms")
    assert largest_gap < 0.060, f"the caller heard a {largest_gap * 1000:.0f} ms gap"
    if handover:
        assert all(direct for *_, direct in legs), legs  # bridged by rtpengine itself
        assert relayed == [0, 0], seen  # not one packet through warmline
        alone = seen["without_warmline"]  # 0.5 s: 25 packets each way
        assert isinstance(alone, list) and all(got > 15 and sent > 15 for got, sent in alone)
        # warmline's one stream (AI, hold, the human through the relay), then the human's own
        assert len(set(streams)) == 2 and streams.count(streams[-1]) > 60, set(streams)
        # PJSIP plays the new stream: the caller's speech is in the last 2 s the human
        # heard (all of it after the hand-over), 100 frames
        assert speech_frames(load_wav(heard, 8000)[-16000:]) > 40
    else:
        assert not any(direct for *_, direct in legs), legs
        assert all(count > 60 for count in relayed), seen  # through the relay behind
        assert len(set(streams)) == 1  # one continuous stream at the caller
        recording = sorted((tmp_path / "baresip").glob("dump-*-dec.wav"))[-1]
        assert speech_onsets(recording) > 50  # the human heard the caller


def speech_frames(samples: np.ndarray) -> int:
    """How many 20 ms frames the VAD takes for speech (test_media_bridge.speech_onsets)."""
    detector = FirstWordDetector(8000, min_frames=1)
    speech = 0
    for index in range(0, len(samples) - 160, 160):
        detector.first_word_at = None
        if detector.feed(samples[index:index + 160].tobytes(), index / 8000) is not None:
            speech += 1
    return speech


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
