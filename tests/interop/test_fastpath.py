"""The compiled fast path: a bridged pair leaves Python and comes back without a seam."""

from __future__ import annotations

import asyncio
import socket
from itertools import pairwise

import numpy as np
import pytest
from G722 import G722

from tests.interop.test_relay import configure, drain, loopback_relay
from warmline.media import g711
from warmline.media.dtmf import TelephoneEvent
from warmline.media.fastpath import G722_LOAD, FastPath
from warmline.media.player import Player, ringback
from warmline.media.relay import EmbeddedRelay, RelayLeg
from warmline.media.rtp import RtpPacket
from warmline.media.sdp import CODECS, AudioStream

pytestmark = pytest.mark.interop


def test_the_fast_path_is_built() -> None:
    """scripts/build-core compiles it; without it 1,000 calls per core is out of reach."""
    assert FastPath.create() is not None


async def talk(ends: list[tuple[socket.socket, RelayLeg, int]], count: int,
               payload: bytes = b"\x55" * 160, first: int = 0) -> None:
    """Each far end sends ``count`` 20 ms packets to its leg, all at once per tick."""
    for n in range(first, first + count):
        for sock, leg, ssrc in ends:
            assert leg.stream is not None
            packet = RtpPacket(leg.stream.payload_type, (7000 + n) & 0xFFFF,
                               (160 * n) & 0xFFFFFFFF, ssrc, payload)
            sock.sendto(packet.to_bytes(), (leg.local.host, leg.local.port))
        await asyncio.sleep(0.02)


async def bridged(relay: EmbeddedRelay, caller: socket.socket, human: socket.socket,
                  human_codec: str = "pcmu") -> tuple[RelayLeg, RelayLeg]:
    to_caller, to_human = await relay.open_leg("caller"), await relay.open_leg("human")
    configure(to_caller, caller, "pcmu")
    configure(to_human, human, human_codec)
    to_caller.route_to(to_human)
    to_human.route_to(to_caller)
    return to_caller, to_human


def assert_continuous(packets: list[RtpPacket], switch_slack: int = 0) -> None:
    """One SSRC, sequence +1 each packet, timestamp +20 ms (a switch: the real time elapsed)."""
    assert len({p.ssrc for p in packets}) == 1
    for before, after in pairwise(packets):
        assert after.sequence == (before.sequence + 1) & 0xFFFF
        step = (after.timestamp - before.timestamp) & 0xFFFFFFFF
        assert step == 160 or (after.marker and 0 < step <= 160 + switch_slack)


def test_a_bridged_pair_moves_to_the_fast_path_and_back_without_a_seam() -> None:
    async def scenario() -> list[RtpPacket]:
        async with loopback_relay(2) as (relay, (caller, human)):
            to_caller, to_human = await bridged(relay, caller, human)
            await talk([(caller, to_caller, 1), (human, to_human, 2)], 80)
            assert relay.fast_path is not None and relay.fast_path.offloads == 1
            assert to_caller.offload is not None
            mid_call = to_human.counters  # read live from the forwarder
            assert mid_call.received >= 79 and mid_call.sent >= 79
            to_caller.take_back()  # what a re-INVITE or a switch does first
            assert to_caller.offload is None and to_human.offload is None
            await talk([(caller, to_caller, 1), (human, to_human, 2)], 40, first=80)
            heard_by_caller = await drain(caller)
            assert to_human.reception is not None and to_human.reception.received == 120
            assert to_human.reception.lost == 0
            assert to_caller.counters.received == 120
            assert relay.fast_path.offloads == 2  # it went back once the pair qualified again
            return heard_by_caller

    heard = asyncio.run(scenario())
    assert len(heard) == 120
    assert_continuous(heard)


def test_the_fast_path_stamps_exactly_as_python_does() -> None:
    """Same input through both paths: the same sequence/timestamp steps, markers and bytes."""

    async def through(fast: bool) -> list[tuple[int, int, bool, bytes]]:
        async with loopback_relay(3) as (relay, (caller, human, ai)):
            relay._want_fast_path = fast
            to_caller, to_human = await bridged(relay, caller, human, "pcma")
            from_ai = await relay.open_leg("ai")
            configure(from_ai, ai, "pcmu")
            await talk([(caller, to_caller, 1), (human, to_human, 2)], 40,
                       payload=bytes(range(160)))
            from_ai.route_to(to_caller)  # the AI comes back: a switch, with a new SSRC
            await talk([(ai, from_ai, 3)], 5)
            to_human.route_to(to_caller)
            await talk([(caller, to_caller, 1), (human, to_human, 4)], 40, first=40)
            packets = await drain(caller)
            assert (relay.fast_path is not None) == fast
        steps = [(b.sequence - a.sequence) & 0xFFFF for a, b in pairwise(packets)]
        ticks = [(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in pairwise(packets)]
        return [(s, round(t / 160), p.marker, p.payload)
                for s, t, p in zip(steps, ticks, packets[1:], strict=True)]

    python, compiled = asyncio.run(through(False)), asyncio.run(through(True))
    assert len(python) == len(compiled) == 84
    assert [entry[:3] for entry in python] == [entry[:3] for entry in compiled]
    assert [entry[3] for entry in python] == [entry[3] for entry in compiled]
    assert compiled[0][3] == g711.alaw_to_ulaw(bytes(range(160)))  # PCMA human, PCMU caller


def test_bad_packets_on_the_fast_path_are_dropped_and_counted() -> None:
    async def scenario() -> None:
        async with loopback_relay(3) as (relay, (caller, human, stranger)):
            to_caller, to_human = await bridged(relay, caller, human)
            await talk([(caller, to_caller, 1), (human, to_human, 2)], 40)
            assert to_caller.offload is not None
            port = (to_caller.local.host, to_caller.local.port)
            caller.sendto(b"\x80\x00\x01", port)  # truncated
            caller.sendto(b"\x40" + bytes(171), port)  # RTP version 1
            caller.sendto(b"\x8f" + bytes(13), port)  # CSRC list past the end
            caller.sendto(b"\x80\xc8" + bytes(26), port)  # RTCP on the RTP port
            caller.sendto(RtpPacket(96, 1, 1, 1, b"x").to_bytes(), port)  # unknown type
            caller.sendto(b"\x80\x00" + bytes(1600), port)  # oversized
            stranger.sendto(RtpPacket(0, 2, 2, 9, bytes(160)).to_bytes(), port)
            await talk([(caller, to_caller, 1), (human, to_human, 2)], 10, first=40)
            counters = to_caller.counters
            assert (counters.malformed, counters.rtcp, counters.unknown_payload,
                    counters.wrong_source) == (4, 1, 1, 1)
            assert counters.received == 50
            assert len(await drain(human)) == 50

    asyncio.run(scenario())


def test_hold_audio_takes_the_caller_back_from_the_fast_path() -> None:
    async def scenario() -> None:
        async with loopback_relay(2) as (relay, (caller, human)):
            to_caller, to_human = await bridged(relay, caller, human)
            await talk([(caller, to_caller, 1), (human, to_human, 2)], 40)
            assert to_caller.offload is not None
            to_caller.play(Player(ringback(), loop=True))
            assert to_caller.offload is None
            await asyncio.sleep(0.4)
            heard = await drain(caller)
            assert_continuous(heard, switch_slack=80)
            assert len({p.payload for p in heard[-10:]}) > 1  # ringback, not the human's bytes
            to_caller.close()
            to_human.close()

    asyncio.run(scenario())


def tone(frequency: float, rate: int, count: int) -> np.ndarray:
    """``count`` 20 ms frames of a tone at ``rate``, one after another."""
    samples = np.arange(rate // 50 * count) / rate
    return (8000 * np.sin(2 * np.pi * frequency * samples)).astype(np.int16)


def opus_tone(frequency: float, count: int) -> list[bytes]:
    """20 ms Opus packets of a tone, as a 48 kHz WebRTC phone would send them."""
    import opuslib

    encoder = opuslib.Encoder(48000, 1, opuslib.APPLICATION_VOIP)
    audio = tone(frequency, 48000, count).astype("<i2")
    return [bytes(encoder.encode(audio[n * 960:(n + 1) * 960].tobytes(), 960))
            for n in range(count)]


def ulaw_tone(frequency: float, count: int) -> list[bytes]:
    audio = tone(frequency, 8000, count)
    return [g711.ulaw_encode(audio[n * 160:(n + 1) * 160]) for n in range(count)]


def loudest(audio: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(audio.astype(np.float64)))
    return float(np.fft.rfftfreq(len(audio), 1 / rate)[np.argmax(spectrum)])


async def speak(ends: list[tuple[socket.socket, RelayLeg, int, list[bytes], int]]) -> None:
    """Each far end sends its frames (ssrc, payloads, timestamp step), one per 20 ms tick."""
    for n in range(len(ends[0][3])):
        for sock, leg, ssrc, frames, step in ends:
            assert leg.stream is not None
            packet = RtpPacket(leg.stream.payload_type, (3000 + n) & 0xFFFF, step * n, ssrc,
                               frames[n])
            sock.sendto(packet.to_bytes(), (leg.local.host, leg.local.port))
        await asyncio.sleep(0.02)


def steps_of(packets: list[RtpPacket]) -> list[tuple[int, int, bool]]:
    return [((b.sequence - a.sequence) & 0xFFFF, (b.timestamp - a.timestamp) & 0xFFFFFFFF,
             b.marker) for a, b in pairwise(packets)]


def test_an_opus_human_is_transcoded_on_the_fast_path_as_python_does_it() -> None:
    """PCMU caller, Opus (48 kHz clock) human: the compiled thread decodes and encodes both
    ways, rescales the timestamps, and the far ends hear what the Python path gives."""

    async def through(fast: bool) -> tuple[list[RtpPacket], list[RtpPacket], bool]:
        async with loopback_relay(2) as (relay, (caller, human)):
            relay._want_fast_path = fast
            to_caller, to_human = await bridged(relay, caller, human, "opus")
            await speak([(caller, to_caller, 1, ulaw_tone(440, 60), 160),
                         (human, to_human, 2, opus_tone(1000, 60), 960)])
            offloaded = to_caller.offload is not None
            assert to_caller.counters.malformed == to_human.counters.malformed == 0
            return await drain(caller), await drain(human), offloaded

    for fast in (False, True):
        heard_by_caller, heard_by_human, offloaded = asyncio.run(through(fast))
        assert offloaded == fast
        assert len(heard_by_caller) == len(heard_by_human) == 60
        assert {p.payload_type for p in heard_by_caller} == {0}
        assert {p.payload_type for p in heard_by_human} == {111}
        assert steps_of(heard_by_caller) == [(1, 160, False)] * 59
        assert steps_of(heard_by_human) == [(1, 960, False)] * 59
        caller_audio = np.concatenate([g711.ulaw_decode(p.payload) for p in heard_by_caller])
        assert abs(loudest(caller_audio[1600:], 8000) - 1000) < 10
        import opuslib

        decoder = opuslib.Decoder(48000, 1)
        human_audio = np.concatenate([np.frombuffer(decoder.decode(p.payload, 960), "<i2")
                                      for p in heard_by_human])
        assert abs(loudest(human_audio[9600:], 48000) - 440) < 10


def test_events_and_bad_opus_packets_on_the_transcoding_fast_path() -> None:
    """RFC 4733 durations recounted from the Opus leg's 48 kHz event clock to 8 kHz; an Opus
    packet libopus refuses, or an empty one, is counted malformed and dropped, not sent on."""

    async def through(fast: bool) -> tuple[list[RtpPacket], int, int, bool]:
        async with loopback_relay(2) as (relay, (caller, human)):
            relay._want_fast_path = fast
            to_caller, to_human = await bridged(relay, caller, human)
            host, port = human.getsockname()
            to_human.configure(AudioStream(111, CODECS["opus"], 101, 20, host, port,
                                           "sendrecv", dtmf_clock_rate=48000))
            await speak([(caller, to_caller, 1, ulaw_tone(440, 20), 160),
                         (human, to_human, 2, opus_tone(1000, 20), 960)])
            offloaded = to_caller.offload is not None
            await drain(caller)
            address = (to_human.local.host, to_human.local.port)
            for n, payload in enumerate([b"\x03\x00", b""]):
                human.sendto(RtpPacket(111, 3020 + n, 960 * 20, 2, payload).to_bytes(), address)
            event = bytes([5, 0x0A]) + (4800).to_bytes(2, "big")
            human.sendto(RtpPacket(101, 3022, 960 * 21, 2, event, True).to_bytes(), address)
            heard = await drain(caller)
            return heard, to_human.counters.malformed, to_human.counters.received, offloaded

    received_by_path = []
    for fast in (False, True):
        heard, malformed, received, offloaded = asyncio.run(through(fast))
        assert offloaded == fast
        assert malformed == 2
        received_by_path.append(received)  # counted received, then malformed: both paths
        [relayed] = heard
        assert relayed.payload_type == 101
        assert TelephoneEvent.parse(relayed.payload).duration == 800
        assert relayed.payload[:2] == bytes([5, 0x0A])
    assert received_by_path[0] == received_by_path[1] == 23


def g722_tone(frequency: float, count: int) -> list[bytes]:
    """20 ms G.722 packets of a tone, coded by the `G722` package (not warmline's codec)."""
    encoder = G722(8000, 64000)
    audio = tone(frequency, 8000, count)
    return [bytes(encoder.encode(audio[n * 160:(n + 1) * 160])) for n in range(count)]


def test_a_g722_human_is_transcoded_on_the_fast_path_byte_for_byte_as_python_does_it() -> None:
    """PCMU caller, G.722 human (RTP clock 8000, as G.711's: nothing to rescale): the
    compiled thread's G.722 sends the far ends the very bytes the Python path sends, and the
    `G722` package would. A telephone-event from each far end comes first: it latches both
    legs and hands the pair over before any audio, so on either path one fresh codec state
    codes every frame (a pair's codec states start afresh on the thread)."""
    frames = 40
    caller_frames, human_frames = ulaw_tone(440, frames), g722_tone(1000, frames)
    package = G722(8000, 64000)
    hears_caller = [g711.ulaw_encode(np.asarray(package.decode(f), np.int16))
                    for f in human_frames]
    package = G722(8000, 64000)
    hears_human = [bytes(package.encode(g711.ulaw_decode(f))) for f in caller_frames]

    async def through(fast: bool) -> tuple[list[RtpPacket], list[RtpPacket]]:
        async with loopback_relay(2) as (relay, (caller, human)):
            relay._want_fast_path = fast
            to_caller, to_human = await bridged(relay, caller, human, "g722")
            event = bytes([5, 0x0A]) + (160).to_bytes(2, "big")
            for sock, leg, ssrc in [(caller, to_caller, 1), (human, to_human, 2)]:
                sock.sendto(RtpPacket(101, 2999, 0, ssrc, event, True).to_bytes(),
                            (leg.local.host, leg.local.port))
                await asyncio.sleep(0.02)
            assert (to_caller.offload is not None) == fast  # before the first audio frame
            await speak([(caller, to_caller, 1, caller_frames, 160),
                         (human, to_human, 2, human_frames, 160)])
            assert to_caller.counters.malformed == to_human.counters.malformed == 0
            if fast:  # every audio frame went through the thread, both ways
                assert relay.fast_path is not None and "g722" in relay.fast_path.transcodes
                assert to_caller.offload is not None and relay.fast_path.offloads == 1
                assert sum(relay.fast_path.load) == G722_LOAD  # lighter than an Opus pair
                for leg in (to_caller, to_human):
                    received, sent = relay.fast_path.live_counters(to_caller.offload, leg)[:2]
                    assert (received, sent) == (frames, frames)
            return await drain(caller), await drain(human)

    python, compiled = asyncio.run(through(False)), asyncio.run(through(True))
    for heard_by_caller, heard_by_human in (python, compiled):
        assert [p.payload_type for p in heard_by_caller] == [101] + [0] * frames
        assert [p.payload_type for p in heard_by_human] == [101] + [9] * frames
        assert steps_of(heard_by_caller[1:]) == steps_of(heard_by_human[1:]) \
            == [(1, 160, False)] * (frames - 1)
        assert [p.payload for p in heard_by_caller[1:]] == hears_caller
        assert [p.payload for p in heard_by_human[1:]] == hears_human
    for heard_python, heard_compiled in zip(python, compiled, strict=True):
        assert steps_of(heard_python) == steps_of(heard_compiled)
        assert [p.payload for p in heard_python] == [p.payload for p in heard_compiled]


def test_pairs_are_shared_among_the_forwarder_threads() -> None:
    """[media] relay_threads: each new pair goes to the thread holding the fewest, and a
    pair taken back frees its place there."""

    async def scenario() -> None:
        async with loopback_relay(4) as (relay, (caller_1, human_1, caller_2, human_2)):
            relay._fast_path_threads = 2
            first = await bridged(relay, caller_1, human_1)
            second = await bridged(relay, caller_2, human_2, "opus")
            assert relay.fast_path is not None and relay.fast_path.threads == 2
            await speak([(caller_1, first[0], 1, ulaw_tone(440, 30), 160),
                         (human_1, first[1], 2, ulaw_tone(1000, 30), 160),
                         (caller_2, second[0], 3, ulaw_tone(440, 30), 160),
                         (human_2, second[1], 4, opus_tone(1000, 30), 960)])
            offloads = [first[0].offload, second[0].offload]
            assert offloads[0] is not None and offloads[1] is not None
            assert {offloads[0].thread, offloads[1].thread} == {0, 1}
            for sock in (caller_1, human_1, caller_2, human_2):
                assert len(await drain(sock)) == 30
            first[0].take_back()
            third = await bridged(relay, caller_1, human_1)
            first[0].close()
            first[1].close()
            await speak([(caller_1, third[0], 5, ulaw_tone(440, 5), 160),
                         (human_1, third[1], 6, ulaw_tone(1000, 5), 160)])
            assert third[0].offload is not None
            assert third[0].offload.thread == offloads[0].thread  # the freed place

    asyncio.run(scenario())


def tone_loop(frames: int = 5) -> np.ndarray:
    """A looped buffer of whole 20 ms frames, each frame different (a rising tone)."""
    return np.concatenate([tone(300 + 100 * n, 8000, 1) for n in range(frames)])


def test_hold_music_loops_on_the_fast_path_as_python_plays_it() -> None:
    """A looped player on a G.711 leg is sent by the forwarder's 20 ms timer: the frames in
    order, wrapping, on one continuous stream, counted; the same as the Python path."""

    async def through(fast: bool) -> tuple[list[RtpPacket], bool, int]:
        async with loopback_relay(1) as (relay, (caller,)):
            relay._want_fast_path = fast
            to_caller = await relay.open_leg("caller")
            configure(to_caller, caller, "pcmu")
            to_caller.play(Player(tone_loop(), loop=True))
            await asyncio.sleep(0.5)
            compiled = to_caller.playing is not None
            sent = to_caller.counters.sent
            to_caller.silence()
            assert to_caller.playing is None
            heard = await drain(caller)
            await asyncio.sleep(0.1)
            assert not await drain(caller)  # nothing after the music stopped
            return heard, compiled, sent

    frames = [g711.ulaw_encode(frame) for frame in tone_loop().reshape(5, 160)]
    for fast in (False, True):
        heard, compiled, sent = asyncio.run(through(fast))
        assert compiled == fast
        assert 20 <= len(heard) <= 30 and sent == len(heard)
        assert_continuous(heard)
        assert [p.payload for p in heard] == [frames[n % 5] for n in range(len(heard))]


def test_hold_music_on_the_fast_path_gives_way_to_the_human_without_a_seam() -> None:
    async def scenario() -> list[RtpPacket]:
        async with loopback_relay(2) as (relay, (caller, human)):
            to_caller, from_human = await relay.open_leg("caller"), await relay.open_leg("human")
            configure(to_caller, caller, "pcmu")
            configure(from_human, human, "pcmu")
            to_caller.play(Player(tone_loop(), loop=True))
            await asyncio.sleep(0.3)
            assert to_caller.playing is not None
            from_human.route_to(to_caller)  # pending: the music plays until the human talks
            await asyncio.sleep(0.1)
            await talk([(human, from_human, 9)], 20, payload=b"\x11" * 160)
            assert to_caller.playing is None and to_caller.source is from_human
            assert relay.fast_path is not None and not any(relay.fast_path.load)
            return await drain(caller)

    heard = asyncio.run(scenario())
    assert_continuous(heard, switch_slack=160)
    payloads = [p.payload for p in heard]
    assert payloads[-20:] == [b"\x11" * 160] * 20 and b"\x11" * 160 not in payloads[:-20]


def test_hold_music_follows_the_far_end_it_latches_to() -> None:
    """The loop goes to the SDP's address until the far end's RTP comes from elsewhere
    (a NAT): then it plays in Python to where the far end really is, and goes back."""

    async def scenario() -> tuple[int, int, bool]:
        async with loopback_relay(2) as (relay, (sdp_address, nat_address)):
            to_caller = await relay.open_leg("caller")
            configure(to_caller, sdp_address, "pcmu")
            to_caller.play(Player(tone_loop(), loop=True))
            await asyncio.sleep(0.2)
            assert to_caller.playing is not None
            nat_address.sendto(RtpPacket(0, 1, 160, 0x42, bytes(160)).to_bytes(),
                               (to_caller.local.host, to_caller.local.port))
            await asyncio.sleep(0.05)
            assert to_caller.playing is None  # back in Python, to the latched address
            await drain(sdp_address)
            await asyncio.sleep(1.3)  # past the next offer
            compiled_again = to_caller.playing is not None
            return len(await drain(sdp_address)), len(await drain(nat_address)), compiled_again

    to_sdp, to_nat, compiled_again = asyncio.run(scenario())
    assert to_sdp == 0 and to_nat >= 60 and compiled_again
