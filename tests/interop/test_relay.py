"""The embedded relay over real loopback sockets: continuity, transcoding, bad packets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from itertools import pairwise
from types import SimpleNamespace
from typing import Any, cast

import numpy as np
import pytest

from tests.audio_samples import voiced
from tests.interop.peers import relay_block
from warmline.media import g711
from warmline.media.dtmf import DtmfError, TelephoneEvent, digit_packets
from warmline.media.player import Player, ringback
from warmline.media.relay import EmbeddedRelay, PortRange, RelayLeg
from warmline.media.rtcp import SR, ReportBlock, parse_compound, receiver_report
from warmline.media.rtp import RtpPacket, is_rtcp_type
from warmline.media.sdes import CryptoSuite, SrtpKeys
from warmline.media.sdp import CODECS, AudioStream
from warmline.media.srtp import SrtpTransform

pytestmark = pytest.mark.interop


def endpoint() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def loopback_relay(sockets: int) -> AsyncIterator[tuple[EmbeddedRelay, list[socket.socket]]]:
    """A relay on a free port range and ``sockets`` far ends, all closed afterwards."""
    base = relay_block()
    relay = EmbeddedRelay("127.0.0.1", PortRange(base, base + 100))
    ends = [endpoint() for _ in range(sockets)]
    try:
        yield relay, ends
    finally:
        await relay.close()
        for sock in ends:
            sock.close()


def configure(leg: RelayLeg, peer: socket.socket, codec: str) -> None:
    static = CODECS[codec].static_payload
    pt = 111 if static is None else static
    host, port = peer.getsockname()
    leg.configure(AudioStream(pt, CODECS[codec], 101, 20, host, port, "sendrecv"))


async def send(peer: socket.socket, leg: RelayLeg, ssrc: int, codec: str, count: int,
               payload: bytes) -> None:
    pt = CODECS[codec].static_payload or 0
    for n in range(count):
        packet = RtpPacket(pt, 1000 + n, 160 * n, ssrc, payload)
        peer.sendto(packet.to_bytes(), (leg.local.host, leg.local.port))
        await asyncio.sleep(0.02)


async def drain(peer: socket.socket) -> list[RtpPacket]:
    await asyncio.sleep(0.1)
    received = []
    while True:
        try:
            received.append(RtpPacket.parse(peer.recv(2048)))
        except BlockingIOError:
            return received


def test_caller_hears_one_continuous_stream_across_ai_to_human_with_transcoding() -> None:
    async def scenario() -> None:
        async with loopback_relay(3) as (relay, (caller, ai, human)):
            to_caller = await relay.open_leg("caller")
            from_ai = await relay.open_leg("ai")
            from_human = await relay.open_leg("human")
            configure(to_caller, caller, "pcmu")
            configure(from_ai, ai, "pcmu")
            configure(from_human, human, "pcma")
            from_ai.route_to(to_caller)
            await send(ai, from_ai, 0xA1, "pcmu", 10, b"\x81" * 160)
            from_ai.route_to(None)
            from_human.route_to(to_caller)
            await send(human, from_human, 0xB2, "pcma", 10, b"\xd5" * 160)
            heard = await drain(caller)
            assert len(heard) == 20
            assert len({p.ssrc for p in heard}) == 1
            assert [p.sequence for p in heard] == [
                (heard[0].sequence + n) & 0xFFFF for n in range(20)]
            assert {p.payload_type for p in heard} == {0}
            assert heard[10].payload == g711.alaw_to_ulaw(b"\xd5" * 160)  # PCMA -> PCMU
            assert heard[10].marker and not heard[11].marker
            jump = (heard[10].timestamp - heard[9].timestamp) & 0xFFFFFFFF
            assert 160 <= jump <= 8000  # real elapsed time, not a random offset

            to_caller.route_to(from_human)  # and back: the caller's PCMU reaches PCMA
            await send(caller, to_caller, 0xC3, "pcmu", 3, b"\xff" * 160)
            reached = await drain(human)
            assert [p.payload_type for p in reached] == [8, 8, 8]
            assert reached[0].payload == g711.ulaw_to_alaw(b"\xff" * 160)

    asyncio.run(scenario())


def test_bad_packets_are_dropped_and_counted() -> None:
    async def scenario() -> None:
        async with loopback_relay(3) as (relay, (caller, human, stranger)):
            from_caller, to_human = await relay.open_leg("caller"), await relay.open_leg("human")
            configure(from_caller, caller, "pcmu")
            configure(to_human, human, "pcmu")
            from_caller.route_to(to_human)
            address = (from_caller.local.host, from_caller.local.port)
            await send(caller, from_caller, 0x11, "pcmu", 1, b"\xff" * 160)  # latches
            caller.sendto(b"\x00garbage", address)
            caller.sendto(bytes([0x80, 0xC8]) + bytes(26), address)  # RTCP sender report
            caller.sendto(RtpPacket(18, 1, 1, 0x11, b"x" * 20).to_bytes(), address)  # G.729
            stranger.sendto(RtpPacket(0, 2, 2, 0x99, b"\xff" * 160).to_bytes(), address)
            await asyncio.sleep(0.1)
            counters = from_caller.counters
            assert (counters.received, counters.malformed, counters.rtcp,
                    counters.unknown_payload, counters.wrong_source) == (1, 1, 1, 1, 1)
            assert len(await drain(human)) == 1

    asyncio.run(scenario())


class Listener(asyncio.DatagramProtocol):
    """A far end that records when each packet arrives."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, RtpPacket]] = []

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.arrivals.append((asyncio.get_running_loop().time(), RtpPacket.parse(data)))


def test_hold_audio_then_human_without_a_gap() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        base = relay_block()
        relay = EmbeddedRelay("127.0.0.1", PortRange(base, base + 100))
        transport, caller = await loop.create_datagram_endpoint(
            Listener, local_addr=("127.0.0.1", 0))
        human = endpoint()
        try:
            to_caller = await relay.open_leg("caller")
            from_human = await relay.open_leg("human")
            host, port = transport.get_extra_info("sockname")
            to_caller.configure(AudioStream(0, CODECS["pcmu"], None, 20, host, port, "sendrecv"))
            configure(from_human, human, "pcmu")
            to_caller.play(Player(ringback(8000, "eu"), loop=True))
            await asyncio.sleep(0.3)

            async def human_talks() -> None:  # RTP every 20 ms, as a phone sends it
                for n in range(15):
                    packet = RtpPacket(0, 500 + n, 320 * n, 0xB2, b"\x7e" * 160)
                    human.sendto(packet.to_bytes(), (from_human.local.host,
                                                     from_human.local.port))
                    await asyncio.sleep(0.02)

            from_human.route_to(to_caller)  # the human answered; their RTP is not flowing yet
            await asyncio.sleep(0.1)  # hold audio must go on meanwhile
            await human_talks()
            await asyncio.sleep(0.05)
        finally:
            transport.close()
            human.close()
            await relay.close()
        packets = [p for _, p in caller.arrivals]
        switch = next(i for i, p in enumerate(packets) if p.payload == b"\x7e" * 160)
        assert switch >= 10 and len(packets) - switch == 15  # hold audio, then all of the human
        assert len({p.ssrc for p in packets}) == 1
        assert [p.sequence for p in packets] == [
            (packets[0].sequence + n) & 0xFFFF for n in range(len(packets))]
        times = [t for t, _ in caller.arrivals]
        around = times[switch - 3 : switch + 3]
        gap = max(b - a for a, b in pairwise(around))
        assert gap < 0.060, f"largest gap around the switch: {gap * 1000:.1f} ms"

    asyncio.run(scenario())


def tone_through_relay(human_codec: str) -> list[RtpPacket]:
    """A 440 Hz tone sent as PCMU by the caller, as the human's socket received it."""

    async def scenario() -> list[RtpPacket]:
        async with loopback_relay(2) as (relay, (caller, human)):
            from_caller, to_human = await relay.open_leg("caller"), await relay.open_leg("human")
            configure(from_caller, caller, "pcmu")
            configure(to_human, human, human_codec)
            from_caller.route_to(to_human)
            tone = (np.sin(2 * np.pi * 440 * np.arange(8000) / 8000) * 8000).astype(np.int16)
            for n in range(25):
                payload = g711.ulaw_encode(tone[n * 160:(n + 1) * 160])
                caller.sendto(RtpPacket(0, n, n * 160, 0x77, payload).to_bytes(),
                              (from_caller.local.host, from_caller.local.port))
                await asyncio.sleep(0.005)
            return await drain(human)

    return asyncio.run(scenario())


def decode_as_received(codec: str, packets: list[RtpPacket]) -> tuple[np.ndarray, int]:
    """The human's side decoding, with the codec libraries themselves (not warmline's)."""
    if codec == "g722":
        from G722 import G722

        g722 = G722(8000, 64000)
        return np.concatenate([np.asarray(g722.decode(p.payload), dtype=np.int16)
                               for p in packets]), 8000
    import opuslib

    opus = opuslib.Decoder(48000, 1)
    return np.concatenate([np.frombuffer(opus.decode(p.payload, 960), dtype="<i2")
                           for p in packets]), 48000


@pytest.mark.parametrize(("codec", "payload_type", "timestamp_step"),
                         [("g722", 9, 160), ("opus", 111, 960)])
def test_pcmu_caller_reaches_a_transcoded_human_with_the_audio_intact(
        codec: str, payload_type: int, timestamp_step: int) -> None:
    heard = tone_through_relay(codec)
    assert len(heard) == 25 and {p.payload_type for p in heard} == {payload_type}
    steps = {(b.timestamp - a.timestamp) & 0xFFFFFFFF for a, b in pairwise(heard)}
    assert steps == {timestamp_step}  # 20 ms on the human codec's RTP clock
    audio, rate = decode_as_received(codec, heard)
    skip = rate // 10  # the codecs' start-up
    spectrum = np.abs(np.fft.rfft(audio[skip:].astype(np.float64)))
    assert abs(np.fft.rfftfreq(len(audio) - skip, 1 / rate)[np.argmax(spectrum)] - 440) < 10


def test_digits_first_words_and_a_whisper_that_ends_before_connecting() -> None:
    async def scenario() -> tuple[list[str], list[float], float, float]:
        loop = asyncio.get_running_loop()
        digits: list[str] = []
        words: list[float] = []
        async with loopback_relay(2) as (relay, (caller, human)):
            from_caller, to_human = await relay.open_leg("caller"), await relay.open_leg("human")
            configure(from_caller, caller, "pcmu")
            configure(to_human, human, "pcmu")
            from_caller.on_dtmf = digits.append
            to_human.detect_first_word(words.append)
            address = (from_caller.local.host, from_caller.local.port)
            for marker, payload in digit_packets("0"):  # the caller presses 0
                caller.sendto(RtpPacket(101, 7, 8000, 0x11, payload, marker).to_bytes(), address)
            whisper = to_human.play(Player(np.full(8000 // 2, 1000, dtype=np.int16)))
            started = loop.time()
            await asyncio.wait_for(whisper.done, 2)
            whisper_took = loop.time() - started
            human_address = (to_human.local.host, to_human.local.port)
            speech = np.concatenate([np.zeros(8000 // 2, np.int16), voiced(1.0)])
            speech_starts = loop.time() + 0.5
            for n in range(len(speech) // 160):
                frame = g711.ulaw_encode(speech[n * 160:(n + 1) * 160])
                human.sendto(RtpPacket(0, n, n * 160, 0x22, frame).to_bytes(), human_address)
                await asyncio.sleep(0.02)
            return digits, words, whisper_took, speech_starts

    digits, words, whisper_took, speech_starts = asyncio.run(scenario())
    assert digits == ["0"]
    assert 0.45 <= whisper_took <= 0.7  # a 0.5 s whisper, played out in real time
    assert len(words) == 1 and abs(words[0] - speech_starts) < 0.25


def test_closed_legs_leave_the_relay_and_free_their_ports() -> None:
    async def scenario() -> None:
        base = relay_block()
        relay = EmbeddedRelay("127.0.0.1", PortRange(base, base + 6))  # room for 3 legs
        legs = [await relay.open_leg(str(n)) for n in range(3)]
        with pytest.raises(OSError, match="no free port"):
            await relay.open_leg("one too many")
        legs[1].close()
        assert len(relay.legs) == 2
        await asyncio.sleep(0.01)
        reused = await relay.open_leg("again")
        assert reused.local.port == legs[1].local.port
        await relay.close()
        assert not relay.legs

    asyncio.run(scenario())


def test_leg_sends_dtmf_paced_and_keeps_reception_statistics() -> None:
    async def scenario() -> tuple[list[RtpPacket], RelayLeg]:
        async with loopback_relay(1) as (relay, (phone,)):
            leg = await relay.open_leg("phone")
            configure(leg, phone, "pcmu")
            address = (leg.local.host, leg.local.port)
            for n in (0, 1, 2, 4, 5):  # sequence 3 never arrives
                phone.sendto(RtpPacket(0, n, n * 160, 0x31, b"\xff" * 160).to_bytes(), address)
            await asyncio.sleep(0.05)
            leg.send_dtmf("0")
            await asyncio.sleep(0.25)
            return await drain(phone), leg

    events, leg = asyncio.run(scenario())
    assert [p.payload_type for p in events] == [101] * 7
    assert [TelephoneEvent.parse(p.payload).end for p in events] == [False] * 4 + [True] * 3
    assert events[0].marker and len({p.timestamp for p in events}) == 1
    assert leg.reception is not None and leg.reception.lost == 1
    leg.configure(AudioStream(0, CODECS["pcmu"], None, 20, "127.0.0.1", 9, "sendrecv"))
    with pytest.raises(DtmfError, match="telephone-event"):
        leg.send_dtmf("1")  # the far end never accepted RFC 4733 events


def test_dtmf_relayed_between_event_clocks_keeps_its_duration_in_time() -> None:
    """RFC 4733 §2.5.1.3: the duration counts the event's clock; 100 ms is 4800 at
    48 kHz (opus) and 800 at 8 kHz (PCMU)."""
    async def scenario() -> list[RtpPacket]:
        async with loopback_relay(2) as (relay, (opus_phone, pcmu_phone)):
            opus, pcmu = await relay.open_leg("caller"), await relay.open_leg("human")
            host, port = opus_phone.getsockname()
            opus.configure(AudioStream(111, CODECS["opus"], 101, 20, host, port, "sendrecv",
                                       dtmf_clock_rate=48000))
            configure(pcmu, pcmu_phone, "pcmu")
            opus.route_to(pcmu)
            pcmu.route_to(opus)
            event = bytes([5, 0x0A]) + (4800).to_bytes(2, "big")
            opus_phone.sendto(RtpPacket(101, 1, 9600, 0x77, event, True).to_bytes(),
                              (opus.local.host, opus.local.port))
            return await drain(pcmu_phone)

    [relayed] = asyncio.run(scenario())
    assert relayed.payload_type == 101
    assert TelephoneEvent.parse(relayed.payload).duration == 800
    assert relayed.payload[:2] == bytes([5, 0x0A])


def peak_frequencies(packets: list[RtpPacket]) -> set[int]:
    """The tones (to 10 Hz) standing out in what a socket received."""
    audio = np.concatenate([g711.ulaw_decode(p.payload) for p in packets]).astype(np.float64)
    spectrum = np.abs(np.fft.rfft(audio))
    freqs = np.fft.rfftfreq(len(audio), 1 / 8000)
    strong = spectrum > 0.3 * spectrum.max() if spectrum.max() > 0 else spectrum > 1
    return {int(round(f / 10) * 10) for f in freqs[strong] if f > 50}


def test_three_way_conference_each_hears_the_other_two() -> None:
    from warmline.media.conference import Conference

    async def scenario() -> dict[str, list[RtpPacket]]:
        tones = {"caller": 440, "ai": 0, "human": 1000}
        async with loopback_relay(3) as (relay, ends):
            phones = dict(zip(tones, ends, strict=True))
            legs = {name: await relay.open_leg(name) for name in phones}
            for name, leg in legs.items():
                configure(leg, phones[name], "pcmu")
            conference = Conference()
            for leg in legs.values():
                conference.join(leg)
            t = np.arange(160 * 40) / 8000
            for n in range(40):
                for name, phone in phones.items():
                    wave = (np.sin(2 * np.pi * tones[name] * t) * 8000).astype(np.int16)
                    frame = g711.ulaw_encode(wave[n * 160:(n + 1) * 160])
                    phone.sendto(RtpPacket(0, n, n * 160, 0x40, frame).to_bytes(),
                                 (legs[name].local.host, legs[name].local.port))
                await asyncio.sleep(0.02)
            conference.close()
            return {name: (await drain(phone))[5:-3] for name, phone in phones.items()}

    heard = asyncio.run(scenario())
    assert peak_frequencies(heard["ai"]) >= {440, 1000}  # the AI hears both
    assert 1000 in peak_frequencies(heard["caller"]) and 440 not in peak_frequencies(
        heard["caller"])  # the caller does not hear itself
    assert 440 in peak_frequencies(heard["human"]) and 1000 not in peak_frequencies(
        heard["human"])


def test_played_audio_ends_when_replaced_or_silenced_and_a_mix_takes_relay_legs_only() -> None:
    """What the call logic relies on (plane.py): ``Playback.done`` always resolves,
    ``silence`` leaves the far end hearing nothing, a foreign leg is refused."""

    class ForeignLeg:
        """A leg some other media plane opened."""

    async def scenario() -> None:
        async with loopback_relay(1) as (relay, (caller,)):
            leg = await relay.open_leg("caller")
            configure(leg, caller, "pcmu")
            first = leg.play(Player(ringback(), loop=True))
            second = leg.play(Player(ringback(), loop=True))
            await asyncio.wait_for(first.done, 1)  # replaced by other audio
            assert not second.done.done()
            assert await drain(caller)  # the second one is heard
            leg.silence()
            await asyncio.wait_for(second.done, 1)
            await drain(caller)  # whatever was on the way before
            assert await drain(caller) == []

            mix = relay.open_mix()
            with pytest.raises(TypeError):
                mix.join(ForeignLeg())  # type: ignore[arg-type]
            with pytest.raises(TypeError):
                leg.route_to(ForeignLeg())
            mix.join(leg)
            assert mix.members == [leg]
            leg.silence()  # leaves the mix by itself
            assert mix.members == []
            await drain(caller)
            assert await drain(caller) == []
            mix.close()

    asyncio.run(scenario())


def test_a_leg_on_hold_sends_nothing() -> None:
    async def scenario() -> tuple[int, int]:
        async with loopback_relay(2) as (relay, (caller, human)):
            from_caller, to_human = await relay.open_leg("caller"), await relay.open_leg("human")
            configure(from_caller, caller, "pcmu")
            host, port = human.getsockname()
            to_human.configure(AudioStream(0, CODECS["pcmu"], 101, 20, host, port, "inactive"))
            from_caller.route_to(to_human)
            await send(caller, from_caller, 0x51, "pcmu", 5, b"\xff" * 160)
            held = len(await drain(human))
            to_human.configure(AudioStream(0, CODECS["pcmu"], 101, 20, host, port, "sendrecv"))
            await send(caller, from_caller, 0x51, "pcmu", 5, b"\xff" * 160)
            return held, len(await drain(human))

    assert asyncio.run(scenario()) == (0, 5)


@pytest.mark.parametrize("mux", [False, True])
def test_legs_send_rtcp_reports_and_keep_the_far_ends(mux: bool) -> None:
    async def scenario() -> None:
        base = relay_block()
        relay = EmbeddedRelay("127.0.0.1", PortRange(base, base + 40), rtcp_interval=0.15)
        phone, phone_rtcp = endpoint(), endpoint()
        try:
            leg = await relay.open_leg("caller")
            host, port = phone.getsockname()
            leg.configure(AudioStream(0, CODECS["pcmu"], 101, 20, host, port, "sendrecv",
                                      rtcp_mux=mux, remote_rtcp_port=phone_rtcp.getsockname()[1]))
            leg.play(Player(ringback(), loop=True))  # we send audio: our reports are SRs
            for n in range(60):
                if n % 12 != 5:  # five packets lost on the way
                    packet = RtpPacket(0, 500 + n, 160 * n, 0xCAFE, bytes(160))
                    phone.sendto(packet.to_bytes(), (leg.local.host, leg.local.port))
                await asyncio.sleep(0.005)
            rtcp_port = leg.local.port if mux else leg.local.port + 1
            about_us = ReportBlock(leg.outgoing.ssrc, 12, 3, 4242, 40)
            phone_rtcp.sendto(receiver_report(0xCAFE, [about_us]), (host, rtcp_port))
            phone_rtcp.sendto(b"\x80\xc9\x00\x09garbage", (host, rtcp_port))
            await asyncio.sleep(0.5)
            reports = []
            for sock in (phone, phone_rtcp):
                while True:
                    try:
                        data = sock.recv(2048)
                    except BlockingIOError:
                        break
                    if is_rtcp_type(data[1]):
                        reports += parse_compound(data)
            senders = [r for r in reports if r.kind == SR and r.ssrc == leg.outgoing.ssrc]
            assert senders, f"no sender report among {reports}"
            block = senders[-1].blocks[0]
            assert block.ssrc == 0xCAFE and block.cumulative_lost == 5
            assert block.highest_sequence == 559
            assert leg.far_end_report == about_us
            assert leg.rtcp.counters.malformed == 1
        finally:
            await relay.close()
            phone.close()
            phone_rtcp.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("mux", [True, False])
def test_an_srtp_leg_bridges_to_a_plain_leg_both_ways_with_rtcp_protected(mux: bool) -> None:
    """SRTP caller, plain RTP human: each hears the other's audio, the caller's
    packets and the leg's RTCP (rtcp-mux or its own port) keyed with the leg's key;
    SRTCP from the phone is read; a forged packet is dropped and does not latch; the
    pair stays in Python (the fast path has no libsrtp)."""
    caller_key, leg_key = bytes(range(30)), bytes(range(40, 70))
    suite = CryptoSuite.AES_CM_128_HMAC_SHA1_80
    phone_side = SrtpTransform(SrtpKeys(suite, caller_key, leg_key))  # what the phone holds

    async def scenario() -> None:
        base = relay_block()
        relay = EmbeddedRelay("127.0.0.1", PortRange(base, base + 40), rtcp_interval=0.15)
        caller, caller_rtcp, human, stranger = endpoint(), endpoint(), endpoint(), endpoint()
        try:
            secure = await relay.open_leg("caller")
            plain = await relay.open_leg("human")
            host, port = caller.getsockname()
            secure.configure(AudioStream(0, CODECS["pcmu"], 101, 20, host, port, "sendrecv",
                                         rtcp_mux=mux,
                                         remote_rtcp_port=caller_rtcp.getsockname()[1],
                                         srtp=SrtpKeys(suite, leg_key, caller_key)))
            configure(plain, human, "pcma")
            secure.route_to(plain)
            plain.route_to(secure)
            forged = RtpPacket(0, 1, 0, 0xBAD, b"\x00" * 160).to_bytes() + bytes(10)
            stranger.sendto(forged, (secure.local.host, secure.local.port))
            voice = bytes(range(0, 160))
            for n in range(60):
                packet = RtpPacket(0, 7000 + n, 160 * n, 0xCA11, voice).to_bytes()
                caller.sendto(phone_side.protect(packet), (secure.local.host, secure.local.port))
                reply = RtpPacket(8, 300 + n, 160 * n, 0x4A, g711.ULAW_TO_ALAW[:160]).to_bytes()
                human.sendto(reply, (plain.local.host, plain.local.port))
                await asyncio.sleep(0.01)
            rtcp_port = secure.local.port if mux else secure.local.port + 1
            caller_rtcp.sendto(phone_side.protect_rtcp(receiver_report(0xCA11, [])),
                               (secure.local.host, rtcp_port))
            await asyncio.sleep(0.3)
            heard_by_human = await drain(human)
            assert len(heard_by_human) >= 55
            assert {p.payload for p in heard_by_human} == {voice.translate(g711.ULAW_TO_ALAW)}
            heard_by_caller, reports = [], []
            for sock in (caller, caller_rtcp):
                while True:
                    try:
                        data = sock.recv(2048)
                    except BlockingIOError:
                        break
                    if is_rtcp_type(data[1]):
                        reports += parse_compound(phone_side.unprotect_rtcp(data))
                    else:
                        heard_by_caller.append(RtpPacket.parse(phone_side.unprotect(data)))
            assert len(heard_by_caller) >= 55
            assert {p.payload for p in heard_by_caller} == {
                g711.ULAW_TO_ALAW[:160].translate(g711.ALAW_TO_ULAW)}
            assert any(r.kind == SR and r.ssrc == secure.outgoing.ssrc for r in reports)
            assert secure.counters.malformed == 1 and secure.counters.wrong_source == 0
            assert secure.remote == caller.getsockname()
            assert secure.counters.rtcp == 1 and secure.rtcp.counters.malformed == 0
            assert secure.offload is None and plain.offload is None
        finally:
            await relay.close()
            for sock in (caller, caller_rtcp, human, stranger):
                sock.close()

    asyncio.run(scenario())


class Tap:
    def __init__(self) -> None:
        self.received: list[np.ndarray] = []
        self.sent: list[np.ndarray] = []


def test_a_capture_tap_hears_both_directions_of_a_bridged_transcoded_leg() -> None:
    """The caller's leg bridged to a PCMA human: the tap gets the caller's audio as said
    and the human's as the caller heard it (translated to PCMU), kept off the fast path."""
    caller_tone = (8000 * np.sin(2 * np.pi * 600 * np.arange(160) / 8000)).astype(np.int16)
    human_tone = (8000 * np.sin(2 * np.pi * 1500 * np.arange(160) / 8000)).astype(np.int16)

    async def scenario() -> Tap:
        async with loopback_relay(2) as (relay, (caller, human)):
            to_caller, to_human = await relay.open_leg("caller"), await relay.open_leg("human")
            configure(to_caller, caller, "pcmu")
            configure(to_human, human, "pcma")
            to_caller.route_to(to_human)
            to_human.route_to(to_caller)
            tap = Tap()
            to_caller.capture(cast(Any, SimpleNamespace(received=tap.received.append,
                                                        sent=tap.sent.append)))
            assert to_caller.listening_for_words  # Python must see its packets
            await asyncio.gather(
                send(caller, to_caller, 1, "pcmu", 10, g711.ulaw_encode(caller_tone)),
                send(human, to_human, 2, "pcma", 10, g711.alaw_encode(human_tone)))
            await drain(caller)
            to_caller.capture(None)
            await send(caller, to_caller, 1, "pcmu", 3, g711.ulaw_encode(caller_tone))
            return tap

    tap = asyncio.run(scenario())
    assert len(tap.received) == 10 and len(tap.sent) == 10
    assert all(np.abs(frame.astype(int) - caller_tone).max() < 600 for frame in tap.received)
    assert all(np.abs(frame.astype(int) - human_tone).max() < 600 for frame in tap.sent)
