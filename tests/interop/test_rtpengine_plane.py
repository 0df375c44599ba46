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
2. The rest of the transfer matrix on the plane (bridging off, the default), the caller
   a sipp that streams speech and waits for warmline's BYE: attended (hold, the 3-way
   mix with the AI's introduction, then the PJSIP human), temporary (warm to a PJSIP
   human who hangs up; the AI speaks again, then hangs up), and failure (a busy human,
   then a next destination that never answers and is CANCELed, the announcement, the
   AI). tshark at the caller: one stream, audio on both sides of every switch and no
   gap over 60 ms. Blind: a sipp transferee checks the REFER and reports the outcome
   by NOTIFY (2xx: warmline's BYE; 486: back to the AI). In every case rtpengine holds
   no call afterwards (`list`), and a `query` for the caller leg's call is refused.
3. `warmline serve` with `[media] plane = "rtpengine"`: a call's SDP names
   rtpengine's port; once rtpengine stops answering, the next call gets 503
   with the reason (never a ringing hang) and /readyz says media_plane false.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
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
from tests.interop.test_sipp import FAILURE_TAIL, SUCCESS_TAIL
from tests.interop.transfer_peers import WAIT_FOR_BYE, Human, kinds
from warmline.calls.call import Call
from warmline.engine import CallEngine
from warmline.media.ng import NgClient, NgCommandError
from warmline.media.player import Player, Samples, load_wav
from warmline.media.relay import EmbeddedRelay, PortRange
from warmline.media.rtpengine import RtpengineLeg, RtpenginePlane
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


# -- the rest of the transfer matrix on rtpengine -----------------------------------------

@dataclass
class Matrix:
    """What one run of the engine on the rtpengine plane saw."""

    handoff: Handoff
    returned: list[tuple[str, float]]
    caller_port: int  # the caller leg's public port (rtpengine's)
    caller_rtpengine_call: str  # the caller leg's rtpengine call-id
    after_call: list[str]  # the calls rtpengine still held once every leg had closed
    caller_leg_query: str  # rtpengine's answer to a query for the caller leg's call


async def run_on_rtpengine(tmp_path: Path, ng_port: int, caller: Path, media_port: int,
                           make_handoff: Callable[[Call], Handoff],
                           humans: list[Human] | None = None, transfer_after: Samples | None = None,
                           welcome_back: Samples | None = None,
                           announcement: str | None = None) -> Matrix:
    """A sipp caller calls the engine on RtpenginePlane; the handoff starts on answer (or
    once ``transfer_after`` has played); a caller back with the AI hears ``welcome_back``,
    then the AI hangs up. Every peer must pass and every rtpengine call must be gone."""
    handoffs: list[Handoff] = []
    returned: list[tuple[str, float]] = []
    anchored: list[RtpengineLeg] = []
    base = relay_block()
    client = NgClient("127.0.0.1", ng_port)
    plane = RtpenginePlane(client, EmbeddedRelay("127.0.0.1", PortRange(base, base + 40)))
    async with engine("udp") as running:
        def on_call(call: Call) -> None:
            assert isinstance(call.caller.media, RtpengineLeg)
            anchored.append(call.caller.media)

            def transfer(_: object = None) -> None:
                handoffs.append(calls.transfer(call.id, make_handoff(call)))

            if transfer_after is None:
                transfer()
            else:
                call.caller.media.play(Player(transfer_after)).done.add_done_callback(transfer)

        def on_return(call: Call, why: str, away: float) -> None:
            returned.append((why, away))
            if welcome_back is not None:  # the AI speaks at once, then ends the call
                feed = call.caller.media.play(Player(welcome_back))
                feed.done.add_done_callback(lambda _: calls.hang_up(call))

        calls = CallEngine(running.shell, plane, "127.0.0.1", ["PCMU", "PCMA"], on_call,
                           on_return, records_dir=tmp_path / "records")
        calls.return_announcement = announcement
        plane.start()
        peers = [asyncio.ensure_future(human.run(tmp_path / f"human{n}"))
                 for n, human in enumerate(humans or [])]
        result = await run_sipp(
            ["-sf", str(caller), f"127.0.0.1:{running.spec.port}", "-p", str(free_port()),
             "-mi", "127.0.0.1", "-mp", str(media_port), "-m", "1"], tmp_path, timeout=20)
        assert result.returncode == 0, "caller: " + result.output[-3000:]
        for n, peer in enumerate(peers):
            human_result = await peer
            assert human_result.returncode == 0, f"human {n}: " + human_result.output[-3000:]
        for _ in range(60):  # the last NOTIFY's report, the last BYE's transaction
            if not running.ua.sessions and not plane.legs and all(h.ended for h in handoffs):
                break
            await asyncio.sleep(0.05)
        assert not running.ua.sessions, "a dialog was left open"
        assert not plane.legs, "a leg was left open"
        for _ in range(20):  # the deletes run behind each leg's last queued command
            listed = (await client.command("list")).get("calls")
            assert isinstance(listed, list), listed
            after = [call_id.decode() for call_id in listed if isinstance(call_id, bytes)]
            if not after:
                break
            await asyncio.sleep(0.05)
        try:
            reply = await client.command("query", **{"call-id": anchored[0].call_id})
            query = str(reply.get("result"))
        except NgCommandError as error:
            query = str(error)
        await calls.close()
        await plane.close()
    [handoff] = handoffs
    return Matrix(handoff, returned, anchored[0].local.port, anchored[0].call_id, after, query)


@dataclass(frozen=True)
class Case:
    """One row of the matrix: the mode, the human (a PJSIP phone playing a tone that hangs
    up ``hangup_ms`` after answering; without it, a busy sipp human and then one that never
    answers), and the handoff events at which the caller's audio changes."""

    mode: str
    switches: tuple[str, ...]
    final: bool = True
    hangup_ms: int = 0


CASES = {
    # AI -> hold while it rings -> the 3-way mix with the AI's introduction -> the human
    "attended": Case("attended", ("attempt", "three_way", "introduced"), hangup_ms=1800),
    # AI -> hold -> the human (after the whisper) -> the human hangs up -> the AI again
    "temporary": Case("warm", ("attempt", "connected", "returned_to_ai"), final=False,
                      hangup_ms=1500),
    # AI -> hold -> 486 -> ringback (the next destination) -> ring timeout, CANCEL ->
    # "nobody could take your call" -> the AI
    "busy, then no answer": Case("warm", ("attempt", "attempt_failed", "returned_to_ai")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_rest_of_the_transfer_matrix_through_rtpengine(case: str, tmp_path: Path) -> None:
    """Attended, temporary and failing transfers on the rtpengine plane (bridge off): the
    caller hears one continuous stream through rtpengine across every switch, and no
    rtpengine call outlives the call."""
    row = CASES[case]
    caller_speech, _ = speech_files(tmp_path, "I would like to talk to somebody about my bill.")
    media_port = free_port() // 2 * 2
    streams_then_waits = (f'  <nop>\n    <action>\n      <exec rtp_stream="{caller_speech},-1,0"/>'
                          f'\n    </action>\n  </nop>\n{WAIT_FOR_BYE}')
    caller = render_scenario("caller_waits.xml", tmp_path, headers="", tail=streams_then_waits)
    tts = EspeakTts()
    prompt, welcome_back = tts.synthesize("One moment."), tts.synthesize("I am back.")
    heard = tmp_path / "human-heard.wav"
    with rtpengine(tmp_path) as rtpe, contextlib.ExitStack() as peers, \
            capture_udp(tmp_path, media_port) as pcap:
        humans: list[Human] = []
        phone = None
        if row.hangup_ms:
            phone = peers.enter_context(pjsip_phone(
                tmp_path / "human", free_port(), ring_ms=200, hangup_after_ms=row.hangup_ms,
                tone_hz=HUMAN_HZ, record=heard))
            first, then = Destination(phone.uri, row.mode, 10, whisper="Maria."), []
        else:
            humans = [Human("human_rejects.xml", {"status": "486 Busy Here"}),
                      Human("human_rings.xml")]
            first = Destination(humans[0].uri, row.mode, 10, whisper="Maria.")
            then = [Destination(humans[1].uri, "bridge", 1.0)]

        def make(call: Call) -> Handoff:
            return Handoff(call.id, first, final=row.final, fallback=[*then, "ai"])

        seen = asyncio.run(run_on_rtpengine(
            tmp_path, rtpe.ng_port, caller, media_port, make, humans, transfer_after=prompt,
            welcome_back=welcome_back, announcement="Sorry, nobody is free."))
        if phone is not None:
            assert phone.wait("done")["code"] == 0, phone.text()[-3000:]
            [invite] = phone.invites()  # the human is offered rtpengine's port too
            offered = re.search(r"m=audio (\d+)", invite)
            assert offered is not None and int(offered.group(1)) in rtpe.ports, invite
        ports = rtpe.ports
    handoff = seen.handoff
    events = kinds(handoff)
    assert seen.caller_port in ports  # the caller's RTP is anchored by rtpengine
    assert seen.after_call == [], seen.after_call  # every leg's call deleted
    assert "Unknown call-id" in seen.caller_leg_query, seen.caller_leg_query
    if case == "attended":
        assert events.index("three_way") < events.index("introduced") < \
            events.index("connected"), events
        assert handoff.status == "completed" and not seen.returned
        # the caller's speech reached the human through both legs' rtpengine calls
        assert speech_frames(load_wav(heard, 8000)) > 30
    elif case == "temporary":
        assert "connected" in events and handoff.status == "completed", events
        [(why, away)] = seen.returned
        assert why == "the human hung up" and away > 1.0, seen.returned
        assert speech_frames(load_wav(heard, 8000)) > 30
    else:
        failures = [e.detail for e in handoff.events if e.kind == "attempt_failed"]
        assert [f["sip_status"] for f in failures] == [486, 408], failures
        assert "announced" in events and "connected" not in events, events
        [(why, _)] = seen.returned
        assert why.startswith("no answer"), why
    arrivals = rtp_arrivals(pcap, media_port)
    assert len({ssrc for _, ssrc, _ in arrivals}) == 1  # one continuous stream
    times = [at for at, _, _ in arrivals]
    largest = max(b - a for a, b in pairwise(times))
    at_switch: list[tuple[str, float]] = []
    for event in handoff.events:
        if event.kind not in row.switches:
            continue
        before = [t for t in times if event.at - 0.4 <= t < event.at]
        after = [t for t in times if event.at <= t < event.at + 0.4]
        # audio on both sides of the switch: a gap check that stopped hearing proves nothing
        assert len(before) > 12 and len(after) > 12, (event.kind, len(before), len(after))
        window = [t for t in times if event.at - 0.3 <= t < event.at + 1.0]
        at_switch.append((event.kind, round(max(b - a for a, b in pairwise(window)) * 1000, 1)))
    print(f"{case}: {events}\n  the caller got {len(arrivals)} packets, largest gap "
          f"{largest * 1000:.1f} ms, around each switch {at_switch}")
    assert largest < 0.060, f"the caller heard a {largest * 1000:.0f} ms gap"


@pytest.mark.parametrize("final", ["200 OK", "486 Busy Here"])
def test_blind_through_rtpengine_reported_by_notify(final: str, tmp_path: Path) -> None:
    """A blind transfer on the rtpengine plane: the REFER's outcome comes by NOTIFY (sipp
    as the transferee checks the REFER and our BYE only after a 2xx); either way the
    caller leg's rtpengine call is deleted once the caller is gone."""
    success = final.startswith("2")
    scenario = render_scenario("refer_notify_bye.xml", tmp_path, final=final,
                               tail=SUCCESS_TAIL if success else FAILURE_TAIL)

    def make(call: Call) -> Handoff:
        return Handoff(call.id, Destination("sip:human@127.0.0.1:5999", "blind", 5),
                       fallback=["ai"])

    with rtpengine(tmp_path) as rtpe:
        seen = asyncio.run(run_on_rtpengine(tmp_path, rtpe.ng_port, scenario,
                                            free_port() // 2 * 2, make))
        ports = rtpe.ports
    handoff = seen.handoff
    events = kinds(handoff)
    assert events[:3] == ["requested", "attempt", "accepted"], events
    assert handoff.sip_status == int(final.split()[0])
    if success:
        assert handoff.status == "completed" and "attempt_succeeded" in events, events
        assert not seen.returned
    else:
        assert handoff.status == "failed" and "returned_to_ai" in events, events
        assert seen.returned and "486" in seen.returned[0][0]
    assert seen.caller_port in ports
    assert seen.after_call == [], seen.after_call
    assert "Unknown call-id" in seen.caller_leg_query, seen.caller_leg_query


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
