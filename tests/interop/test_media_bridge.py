"""A caller (sipp, streaming speech) hears AI, then hold audio, then a baresip human.

warmline answers the caller, plays an AI prompt, then hold audio while it calls
the human, and bridges the two through the embedded relay when the human
answers. tshark measures the largest gap the caller receives; baresip's
recording must contain the caller's speech, also when the human's codec
differs from the caller's (transcoding).
"""

from __future__ import annotations

import asyncio
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest

from tests.interop.peers import (
    Engine,
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
from warmline.media import sdp
from warmline.media.player import Player, load_wav, ringback
from warmline.media.relay import EmbeddedRelay, PortRange, RelayLeg
from warmline.media.tts import EspeakTts
from warmline.media.vad import FirstWordDetector
from warmline.sip.session import CallAnswered, CallEnded, IncomingCall, Session, SessionEvent

pytestmark = pytest.mark.interop


class BridgeApp:
    """Test wiring of the pieces issue 4 will turn into the bridge transfer."""

    def __init__(self, running: Engine, caller_leg: RelayLeg, human_leg: RelayLeg,
                 human_uri: str) -> None:
        self.running, self.caller_leg, self.human_leg = running, caller_leg, human_leg
        self.human_uri = human_uri
        self.prompt = EspeakTts().synthesize("One moment, I will connect you with a person.")
        self.caller: Session | None = None
        self.human: Session | None = None
        self.human_answered_at: float | None = None
        self.human_first_word_at: float | None = None
        self.caller_codec = "PCMU"

    def on_event(self, running: Engine, event: SessionEvent) -> None:
        ua, shell = running.ua, running.shell
        if isinstance(event, IncomingCall):
            self.caller = event.session
            answer, stream = sdp.answer(event.session.remote_sdp or b"", "127.0.0.1",
                                        self.caller_leg.local.port, ["PCMU", "PCMA"],
                                        session_id=1, version=1)
            self.caller_codec = stream.codec.name
            self.caller_leg.configure(stream)
            shell.run(lambda now: ua.answer(event.session, answer, now))
            feed = self.caller_leg.play(Player(self.prompt))
            feed.done.add_done_callback(lambda _: self._hold_and_call_human())
        elif isinstance(event, CallAnswered) and event.session is self.human:
            self.human_answered_at = shell.now()
            self.human_leg.configure(sdp.read_answer(event.response.body))
            self.human_leg.detect_first_word(self._human_spoke)
            self.caller_leg.route_to(self.human_leg)
            self.human_leg.route_to(self.caller_leg)  # takes over at the human's first packet
        elif isinstance(event, CallEnded) and event.session is self.caller and self.human:
            human = self.human
            shell.run(lambda now: ua.bye(human, now))

    def _human_spoke(self, at: float) -> None:
        self.human_first_word_at = at

    def _hold_and_call_human(self) -> None:
        self.caller_leg.play(Player(ringback(8000, "us"), loop=True))
        offer = sdp.offer("127.0.0.1", self.human_leg.local.port,
                          [self.caller_codec, "PCMU", "PCMA", "G722"], session_id=2,
                          version=1)
        loop = asyncio.get_running_loop()
        loop.call_later(0.6, lambda: self._invite_human(offer))

    def _invite_human(self, offer: bytes) -> None:
        ua, shell = self.running.ua, self.running.shell
        self.human = shell.run(lambda now: ua.invite(self.human_uri, now, sdp=offer))


def speech_onsets(path: Path) -> int:
    """How many 20 ms frames of a recording the VAD takes for speech."""
    samples = load_wav(path, 8000)
    detector = FirstWordDetector(8000, min_frames=1)
    speech = 0
    for index in range(0, len(samples) - 160, 160):
        detector.first_word_at = None
        if detector.feed(samples[index:index + 160].tobytes(), index / 8000) is not None:
            speech += 1
    return speech


@pytest.mark.parametrize("human_codec", ["PCMU/8000/1", "PCMA/8000/1", "G722/16000/1"])
def test_caller_hears_ai_hold_then_human_without_dead_air(human_codec: str,
                                                          tmp_path: Path) -> None:
    caller_speech, human_speech = speech_files(
        tmp_path, "I would like to talk to somebody about my bill, please. " * 3,
        wav_rate=16000 if human_codec.startswith("G722") else 8000)
    media_port = free_port() // 2 * 2
    scenario_file = render_scenario("caller_rtp_stream.xml", tmp_path,
                                    audio=str(caller_speech), seconds="6000")

    async def call(human_uri: str) -> tuple[int, float]:
        base = relay_block()
        relay = EmbeddedRelay("127.0.0.1", PortRange(base, base + 40))
        caller_leg, human_leg = await relay.open_leg("caller"), await relay.open_leg("human")
        try:
            async with engine("udp") as running:
                app = BridgeApp(running, caller_leg, human_leg, human_uri)
                running.shell.on_event = lambda event: app.on_event(running, event)
                result = await run_sipp(
                    ["-sf", str(scenario_file), f"127.0.0.1:{running.spec.port}",
                     "-p", str(free_port()), "-mi", "127.0.0.1", "-mp", str(media_port),
                     "-m", "1"], tmp_path, timeout=30)
                await asyncio.sleep(0.5)
                assert result.returncode == 0, result.output[-3000:]
                assert app.human is not None and app.human.ended
                assert app.human_answered_at is not None and app.human_first_word_at is not None
                return (human_leg.counters.received,
                        app.human_first_word_at - app.human_answered_at)
        finally:
            await relay.close()

    with baresip(tmp_path, human_speech, human_codec) as human, \
            capture_udp(tmp_path, media_port) as pcap:
        from_human, first_word_after_answer = asyncio.run(call(human.uri))
    assert from_human > 100  # the human's audio flowed for seconds
    assert 0 <= first_word_after_answer < 2.0  # the human's first word, timed on their leg

    arrivals = rtp_arrivals(pcap, media_port)
    assert len(arrivals) > 250  # about 6 s of 20 ms packets reached the caller
    assert len({ssrc for _, ssrc, _ in arrivals}) == 1  # one stream across AI, hold, human
    sequences = [seq for _, _, seq in arrivals]
    assert all((b - a) & 0xFFFF == 1 for a, b in pairwise(sequences))
    largest_gap = max(b - a for (a, _, _), (b, _, _) in pairwise(arrivals))
    assert largest_gap < 0.060, f"the caller heard a {largest_gap * 1000:.0f} ms gap"

    heard = speech_onsets(human.recording())
    assert heard > 50, f"only {heard} speech frames reached the human"
    assert np.abs(load_wav(human.recording(), 8000)).max() > 1000
