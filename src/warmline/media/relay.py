"""The embedded media relay: one UDP socket per leg, forwarding with no gap.

A leg receives RTP from its far end (symmetric RTP: it latches to the address
the first valid packet came from, which NATed phones need) and forwards it to
the leg it is routed to. The receiving leg re-stamps every packet through its
own :class:`ContinuousStream`, so the far end sees one SSRC and one sequence
whatever feeds it (AI, hold audio, human). PCMU<->PCMA is translated per byte;
other pairs among G.711, G.722 and Opus go through the codecs (codecs.py).
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import Callable, Iterator
from functools import partial
from typing import Protocol, cast

from warmline.media import g711
from warmline.media.codecs import Codec, make_codec
from warmline.media.dtmf import DtmfError, DtmfReceiver, digit_packets
from warmline.media.plane import LegAddress, LegCounters
from warmline.media.player import FRAME_MS, Player
from warmline.media.rtcp import ReceptionStats
from warmline.media.rtp import (
    ContinuousStream,
    RtpError,
    RtpPacket,
    SyntheticSource,
    is_rtcp_type,
)
from warmline.media.sdp import AudioStream
from warmline.media.vad import FirstWordDetector

_TRANSLATE = {("pcmu", "pcma"): g711.ULAW_TO_ALAW, ("pcma", "pcmu"): g711.ALAW_TO_ULAW}


def _codec_pair(stream: AudioStream) -> tuple[Codec | None, Codec | None]:
    """Encoder and decoder for the leg's codec; none for a codec we can only pass through."""
    try:
        return make_codec(stream.codec.key), make_codec(stream.codec.key)
    except ValueError:
        return None, None


class Feed(Protocol):
    """Anything other than a leg that a leg's far end can listen to."""

    def stop(self) -> None: ...


class Mixing(Protocol):
    """A conference a leg sends its audio into (conference.py)."""

    def push(self, leg: RelayLeg, packet: RtpPacket) -> None: ...


class PortRange:
    """Hands out even local ports from [start, end), skipping ones in use."""

    def __init__(self, start: int, end: int) -> None:
        if not 1024 <= start < end <= 65536:
            raise ValueError(f"media.ports: bad range {start}-{end}")
        self.start, self.end = start + (start % 2), end
        self._next = self.start

    def candidates(self) -> Iterator[int]:
        """Every even port, starting after the last one handed out (spreads reuse)."""
        yield from range(self._next, self.end - 1, 2)
        yield from range(self.start, self._next, 2)

    def taken(self, port: int) -> None:
        self._next = port + 2 if port + 2 < self.end else self.start


class RelayLeg(asyncio.DatagramProtocol):
    def __init__(self, label: str, local: LegAddress) -> None:
        self.label = label
        self._local = local
        self._counters = LegCounters()
        self.transport: asyncio.DatagramTransport | None = None
        self.stream: AudioStream | None = None
        self.remote: tuple[str, int] | None = None
        self.latched = False
        self.target: RelayLeg | None = None
        self.encoder: Codec | None = None  # for audio sent to this leg's far end
        self.decoder: Codec | None = None  # for audio received from it
        self.source: RelayLeg | Feed | None = None  # what this leg's far end hears
        self.pending: RelayLeg | None = None  # takes over at its first packet
        self.on_dtmf: Callable[[str], None] | None = None  # a digit the far end pressed
        self.on_close: Callable[[RelayLeg], None] | None = None
        self.conference: Mixing | None = None  # set while the leg is in a 3-way mix
        self.reception: ReceptionStats | None = None  # RFC 3550 loss and jitter, per leg
        self._muted_until = 0.0  # audio held back while a DTMF event is sent
        self._dtmf = DtmfReceiver()
        self._first_word: FirstWordDetector | None = None
        self._on_first_word: Callable[[float], None] | None = None
        self.outgoing = ContinuousStream(secrets.randbits(32), 8000,
                                         secrets.randbits(16), secrets.randbits(32))
        self.loop = asyncio.get_running_loop()

    @property
    def local(self) -> LegAddress:
        return self._local

    @property
    def counters(self) -> LegCounters:
        return self._counters

    def configure(self, stream: AudioStream) -> None:
        self.stream = stream
        self.encoder, self.decoder = _codec_pair(stream)
        self.remote = (stream.remote_address, stream.remote_port)
        self.latched = False
        self.outgoing.clock_rate = stream.codec.clock_rate
        self.reception = ReceptionStats(stream.codec.clock_rate)

    def route_to(self, target: object) -> None:
        """What this leg receives is what ``target``'s far end now hears (and only that)."""
        if target is not None and not isinstance(target, RelayLeg):
            raise TypeError("route_to: legs of the embedded relay only")
        self.target = target
        if target is not None:
            target.listen_to(self)

    def listen_to(self, source: RelayLeg | Feed | None) -> None:
        """Switch what the far end hears; the outgoing stream stays continuous.

        From audio being played to a leg, the switch waits for the leg's first
        packet: hold music goes on until the human's audio really flows, so
        the caller never hears the silence in between.
        """
        if isinstance(self.source, PlayerFeed) and isinstance(source, RelayLeg):
            self.pending = source
            return
        self._switch(source)

    def _switch(self, source: RelayLeg | Feed | None) -> None:
        current = self.source
        if current is not None and not isinstance(current, RelayLeg) and current is not source:
            current.stop()
        self.pending = None
        self.source = source

    def detect_first_word(self, callback: Callable[[float], None]) -> None:
        """Call ``callback(loop time)`` once, when the far end starts speaking."""
        self._first_word = FirstWordDetector(8000)
        self._on_first_word = callback

    def send_dtmf(self, digit: str) -> None:
        """Send a DTMF digit to the far end as RFC 4733 events (needs telephone-event)."""
        stream, remote, transport = self.stream, self.remote, self.transport
        if stream is None or stream.dtmf_payload_type is None:
            raise DtmfError(f"leg {self.label}: the far end did not accept telephone-event")
        if remote is None or transport is None:
            return
        packets = digit_packets(digit)
        event_ssrc, start = secrets.randbits(32), secrets.randbits(32)
        step = FRAME_MS / 1000
        self._muted_until = self.loop.time() + step * len(packets)  # RFC 4733 §2.6

        def send(n: int) -> None:
            marker, payload = packets[n]
            packet = RtpPacket(stream.dtmf_payload_type or 0, n, start, event_ssrc, payload,
                               marker)
            transport.sendto(self.outgoing.rewrite(packet, self.loop.time()).to_bytes(), remote)
            self._counters.sent += 1

        for n in range(len(packets)):
            self.loop.call_later(n * step, send, n)

    def play(self, player: Player) -> PlayerFeed:
        """Play ``player`` to the far end (hold audio, ringback, a prompt) until switched."""
        feed = PlayerFeed(self, player)
        self.listen_to(feed)
        feed.start()
        return feed

    def close(self) -> None:
        self.listen_to(None)
        if self.transport is not None:
            self.transport.close()
        self.target = None
        if self.on_close is not None:
            self.on_close(self)
            self.on_close = None

    # -- asyncio ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        counters = self._counters
        if len(data) >= 2 and is_rtcp_type(data[1]):
            counters.rtcp += 1
            return
        try:
            packet = RtpPacket.parse(data)
        except RtpError:
            counters.malformed += 1
            return
        if not self._accept_source(addr):
            counters.wrong_source += 1
            return
        stream = self.stream
        if stream is None or packet.payload_type not in (stream.payload_type,
                                                         stream.dtmf_payload_type):
            counters.unknown_payload += 1
            return
        counters.received += 1
        if self.reception is not None:
            self.reception.update(packet.sequence, packet.timestamp, self.loop.time())
        if packet.payload_type == stream.dtmf_payload_type:
            self._on_telephone_event(packet)
        elif self._first_word is not None and self.decoder is not None:
            self._listen_for_words(packet)
        if self.conference is not None:
            self.conference.push(self, packet)
            return
        target = self.target
        if target is None:
            return
        if target.source is not self:
            if target.pending is not self:
                return
            target._switch(self)
        target.send_from(packet, stream, self.decoder)

    def _on_telephone_event(self, packet: RtpPacket) -> None:
        try:
            digit = self._dtmf.feed(packet.timestamp, packet.payload)
        except DtmfError:
            self._counters.malformed += 1
            return
        if digit is not None and self.on_dtmf is not None:
            self.on_dtmf(digit)

    def _listen_for_words(self, packet: RtpPacket) -> None:
        detector, decoder = self._first_word, self.decoder
        assert detector is not None and decoder is not None
        frame = decoder.decode(packet.payload)
        if len(frame) != 160:
            return  # webrtcvad takes exact 20 ms frames
        onset = detector.feed(frame.tobytes(), self.loop.time())
        if onset is not None:
            self._first_word = None
            if self._on_first_word is not None:
                self._on_first_word(onset)

    def _accept_source(self, addr: tuple[str, int]) -> bool:
        if self.latched:
            return self.remote == (addr[0], addr[1])
        self.remote = (addr[0], addr[1])  # symmetric RTP: answer where it really comes from
        self.latched = True
        return True

    # -- sending ----------------------------------------------------------
    def send_from(self, packet: RtpPacket, source: AudioStream,
                  decoder: Codec | None = None) -> None:
        """Forward a packet received on another leg, re-stamped as this leg's stream.

        Same codec: passed through. PCMU<->PCMA: translated per byte. Otherwise
        decoded with the source leg's decoder and encoded with ours (G.722).
        """
        stream, remote, transport = self.stream, self.remote, self.transport
        if stream is None or remote is None or transport is None:
            return
        if self._muted_until and self.loop.time() < self._muted_until:
            return
        if stream.direction in ("recvonly", "inactive"):
            return  # on hold: we agreed not to send (RFC 3264 §5.1)
        if packet.payload_type == source.dtmf_payload_type:
            if stream.dtmf_payload_type is None:
                return
            packet.payload_type = stream.dtmf_payload_type
        elif source.codec.key != stream.codec.key:
            table = _TRANSLATE.get((source.codec.key, stream.codec.key))
            if table is not None:
                packet.payload = packet.payload.translate(table)
            elif decoder is not None and self.encoder is not None:
                packet.payload = self.encoder.encode(decoder.decode(packet.payload))
            else:
                return
            packet.payload_type = stream.payload_type
        else:
            packet.payload_type = stream.payload_type
        out = self.outgoing.rewrite(packet, self.loop.time(), source.codec.clock_rate)
        transport.sendto(out.to_bytes(), remote)
        self._counters.sent += 1


class Pacer:
    """Calls ``tick`` every 20 ms on the loop clock, without drift, until stopped."""

    def __init__(self, loop: asyncio.AbstractEventLoop, tick: Callable[[], None]) -> None:
        self.loop = loop
        self.tick = tick
        self._handle: asyncio.TimerHandle | None = None
        self._started = 0.0
        self._ticks = 0

    @property
    def running(self) -> bool:
        return self._handle is not None

    def start(self) -> None:
        self._started, self._ticks = self.loop.time(), 0
        self._fire()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = self.loop.call_at(self._started + (self._ticks + 1) * FRAME_MS / 1000,
                                         self._fire)
        self._ticks += 1
        self.tick()


class PlayerFeed:
    """Plays a :class:`Player` into a leg, one 20 ms packet per tick."""

    def __init__(self, leg: RelayLeg, player: Player) -> None:
        self.leg = leg
        self.player = player
        self.source = SyntheticSource()
        self.pacer = Pacer(leg.loop, self._tick)
        self.done: asyncio.Future[None] = leg.loop.create_future()  # played out or stopped

    def start(self) -> None:
        self.pacer.start()

    def stop(self) -> None:
        self.pacer.stop()
        if not self.done.done():
            self.done.set_result(None)

    def _tick(self) -> None:
        leg, stream = self.leg, self.leg.stream
        if leg.source is not self or self.player.finished:
            self.stop()
            return
        if stream is not None and leg.encoder is not None:
            payload = leg.encoder.encode(self.player.next_frame())
            leg.send_from(self.source.packet(stream.payload_type, payload,
                                             stream.codec.clock_rate), stream)


class EmbeddedRelay:
    """In-process :class:`MediaPlane` on ``host`` with ports from ``ports``."""

    def __init__(self, host: str, ports: PortRange) -> None:
        self.host = host
        self.ports = ports
        self.legs: set[RelayLeg] = set()  # open legs; a closed leg removes itself

    async def open_leg(self, label: str) -> RelayLeg:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for port in self.ports.candidates():
            try:
                _, leg = await loop.create_datagram_endpoint(
                    partial(RelayLeg, label, LegAddress(self.host, port)),
                    local_addr=(self.host, port), family=family)
            except OSError:
                continue
            self.ports.taken(port)
            self.legs.add(leg)
            leg.on_close = self.legs.discard
            return leg
        raise OSError(f"media.ports: no free port in {self.ports.start}-{self.ports.end}")

    async def close(self) -> None:
        for leg in list(self.legs):
            leg.close()
