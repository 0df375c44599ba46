"""One leg of the embedded relay: a UDP socket, forwarding with no gap.

A leg receives RTP from its far end (symmetric RTP: it latches to the address
the first valid packet came from, which NATed phones need) and forwards it to
the leg it is routed to. The receiving leg re-stamps every packet through its
own :class:`ContinuousStream`, so the far end sees one SSRC and one sequence
whatever feeds it (AI, hold audio, human). PCMU<->PCMA is translated per byte;
other pairs among G.711, G.722 and Opus go through the codecs (codecs.py).

A leg whose stream agreed SRTP (RFC 4568 keys) unprotects what it receives
before anything else looks at it (what fails authentication is dropped and
does not latch the far end) and protects what it sends and its RTCP, so an
SRTP leg and a plain RTP leg bridge, transcode and conference like any two.

A pair that is simply bridged moves to the compiled fast path (fastpath.py)
and comes back whenever something needs Python again; every method that
changes what a leg sends or listens for takes its pair back first.

The legs live here, apart from :class:`~warmline.media.relay.EmbeddedRelay`
that opens them, so that conference.py can build on legs and the relay can
open conferences without an import loop.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from warmline.media import g711
from warmline.media.codecs import Codec, CodecError, is_stateless, make_codec
from warmline.media.dtmf import DtmfError, DtmfReceiver, digit_packets
from warmline.media.fastpath import FastPath, Offload, Playback
from warmline.media.plane import AudioTap, LegAddress, LegCounters
from warmline.media.player import FRAME_MS, Player, Samples
from warmline.media.rtcp import ReceptionStats, ReportBlock
from warmline.media.rtcp_session import DEFAULT_INTERVAL, RtcpSession
from warmline.media.rtp import (
    MAX_RTP_SIZE,
    ContinuousStream,
    RtpError,
    RtpPacket,
    SyntheticSource,
    is_rtcp_type,
)
from warmline.media.sdp import AudioStream
from warmline.media.srtp import SrtpError, SrtpTransform
from warmline.media.vad import FirstWordDetector

_READ_BATCH = 16  # datagrams read per wake-up before other legs get their turn
_OFFER_RETRY = 50  # packets (a second) before a refused pair is offered to the fast path again
# ticks (a tenth of a second) a loop plays in Python before it is offered to the fast path:
# a hold that ends at once (a blind transfer the far end takes straight away) then never
# makes the round trip to the forwarder's thread and back (two calls into it, a handover of
# the stream's sequence and timestamp), which cost more than the few packets it would send
_FIRST_LOOP_OFFER = 5
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


class RelayLeg:
    """One RTP endpoint: a UDP socket, the far end it talks to and what it hears.

    The embedded relay's :class:`~warmline.media.plane.MediaLeg`; the
    attributes beyond that interface are for the relay's own parts (the fast
    path, RTCP, conferences), not for the call logic.
    """

    def __init__(self, label: str, local: LegAddress, sock: socket.socket,
                 fast_path: FastPath | None = None, rtcp_sock: socket.socket | None = None,
                 rtcp_interval: float = DEFAULT_INTERVAL) -> None:
        self.label = label
        self._local = local
        self._counters = LegCounters()
        self._sock: socket.socket | None = sock
        self.fast_path = fast_path
        self.offload: Offload | None = None  # set while the compiled forwarder owns the pair
        self.playing: PlayerFeed | None = None  # its loop is sent by the compiled forwarder
        self.stream: AudioStream | None = None
        self.remote: tuple[str, int] | None = None
        self.remote_ssrc: int | None = None  # the far end's stream, for our report blocks
        self.latched = False
        self.target: RelayLeg | None = None
        self.encoder: Codec | None = None  # for audio sent to this leg's far end
        self.decoder: Codec | None = None  # for audio received from it
        self.source: RelayLeg | Feed | None = None  # what this leg's far end hears
        self.pending: RelayLeg | None = None  # takes over at its first packet
        self._on_dtmf: Callable[[str], None] | None = None
        self.on_close: Callable[[RelayLeg], None] | None = None
        self.conference: Mixing | None = None  # set while the leg is in a 3-way mix
        self._reception: ReceptionStats | None = None
        self._muted_until = 0.0  # audio held back while a DTMF event is sent
        self._dtmf = DtmfReceiver()
        self._first_word: FirstWordDetector | None = None
        self._on_first_word: Callable[[float], None] | None = None
        self._recorder: Callable[[Samples], None] | None = None
        self._tap: AudioTap | None = None  # a call recording: both directions
        self._sent_decoder: Codec | None = None  # the tap's own, for what we send (G.722 state)
        self._srtp: SrtpTransform | None = None
        self.outgoing = ContinuousStream(secrets.randbits(32), 8000,
                                         secrets.randbits(16), secrets.randbits(32))
        self.loop = asyncio.get_running_loop()
        self._reading = False
        self._next_offer = 0  # the packet count at which to offer the pair to the fast path
        self._rtcp_sock = rtcp_sock  # local port + 1, for far ends without rtcp-mux
        self.rtcp = RtcpSession(self, self._send_rtcp, rtcp_interval)
        self.start_reading()
        if rtcp_sock is not None:
            self.loop.add_reader(rtcp_sock.fileno(), self._rtcp_readable)

    @property
    def local(self) -> LegAddress:
        return self._local

    @property
    def anchor(self) -> str | None:
        return None  # the socket dies with the process

    @property
    def counters(self) -> LegCounters:
        """Packets in and out, those handled by the fast path included."""
        offload, fast_path, playing = self.offload, self.fast_path, self.playing
        if fast_path is None or (offload is None and playing is None):
            return self._counters
        live = LegCounters(**vars(self._counters))
        if offload is not None:
            _add(live, fast_path.live_counters(offload, self))
        if playing is not None and playing.compiled is not None:
            _add(live, fast_path.playback_counters(playing.compiled))
        return live

    @property
    def reception(self) -> ReceptionStats | None:
        """RFC 3550 loss and jitter of what the far end sends (None before configure)."""
        offload, fast_path, reception = self.offload, self.fast_path, self._reception
        if offload is not None and fast_path is not None and reception is not None:
            reception.restore_state(fast_path.reception(offload, self))
        return reception

    @property
    def far_end_report(self) -> ReportBlock | None:
        """The far end's latest RTCP report block on our stream (see rtcp_session.py)."""
        return self.rtcp.far_end

    @property
    def open(self) -> bool:
        return self._sock is not None

    @property
    def muted(self) -> bool:
        return self._muted_until > self.loop.time()

    @property
    def listening_for_words(self) -> bool:
        """Python must see this leg's audio: first-word detection or a recording."""
        return (self._first_word is not None or self._recorder is not None
                or self._tap is not None)

    def record(self, sink: Callable[[Samples], None] | None) -> None:
        """Hand every 20 ms of the far end's audio (8 kHz linear) to ``sink``; None stops."""
        self.take_back()
        self._recorder = sink

    def capture(self, tap: AudioTap | None) -> None:
        """Hand both directions of the leg's audio to ``tap``; None stops."""
        self.take_back()
        self._tap = tap
        self._sent_decoder = None  # made afresh for the codec in use at the first packet

    @property
    def on_dtmf(self) -> Callable[[str], None] | None:
        """Called with each digit the far end presses (RFC 4733)."""
        return self._on_dtmf

    @on_dtmf.setter
    def on_dtmf(self, callback: Callable[[str], None] | None) -> None:
        self.take_back()
        self._on_dtmf = callback

    def take_back(self) -> None:
        """Bring this leg's pair, or the loop it plays, back from the fast path before
        Python changes it."""
        self._next_offer = 0  # whatever changes may make the pair eligible
        if self.offload is not None and self.fast_path is not None:
            self.fast_path.reclaim(self.offload)
        if self.playing is not None:
            self.playing.resume_in_python()

    def add_counters(self, counts: tuple[int, ...]) -> None:
        _add(self._counters, counts)

    def fileno(self) -> int:
        if self._sock is None:
            raise OSError(f"leg {self.label} is closed")
        return self._sock.fileno()

    def start_reading(self) -> None:
        if self._sock is not None and not self._reading:
            self.loop.add_reader(self._sock.fileno(), self._readable)
            self._reading = True

    def stop_reading(self) -> None:
        if self._sock is not None and self._reading:
            self.loop.remove_reader(self._sock.fileno())
            self._reading = False

    def configure(self, stream: AudioStream) -> None:
        self.take_back()
        self.stream = stream
        self._srtp = _transform(self._srtp, stream)
        self.encoder, self.decoder = _codec_pair(stream)
        self._sent_decoder = None  # the codec may have changed: the tap's is made anew
        self.remote = (stream.remote_address, stream.remote_port)
        self.latched = False
        self.outgoing.clock_rate = stream.codec.clock_rate
        self._reception = ReceptionStats(stream.codec.clock_rate)
        if self._sock is not None:
            self.rtcp.start()

    def route_to(self, target: object) -> None:
        """What this leg receives is what ``target``'s far end now hears (and only that).

        The interface lets any :class:`~warmline.media.plane.MediaLeg` be
        passed; only a leg of this relay can be fed its packets, so another is
        a TypeError rather than a route that silently carries nothing.
        """
        if target is not None and not isinstance(target, RelayLeg):
            raise TypeError("route_to: legs of the embedded relay only")
        self.take_back()
        self.target = target
        if target is not None:
            target.listen_to(self)

    def listen_to(self, source: RelayLeg | Feed | None) -> None:
        """Switch what the far end hears; the outgoing stream stays continuous.

        From audio being played to a leg, the switch waits for the leg's first
        packet: hold music goes on until the human's audio really flows, so
        the caller never hears the silence in between.
        """
        self.take_back()
        if isinstance(self.source, PlayerFeed) and isinstance(source, RelayLeg):
            self.pending = source
            return
        self._switch(source)

    def silence(self) -> None:
        """The far end hears nothing: what plays stops, a pending switch and a mix are left."""
        self.listen_to(None)

    def _switch(self, source: RelayLeg | Feed | None) -> None:
        current = self.source
        if current is not None and not isinstance(current, RelayLeg) and current is not source:
            current.stop()
        self.pending = None
        self.source = source

    def detect_first_word(self, callback: Callable[[float], None]) -> None:
        """Call ``callback(loop time)`` once, when the far end starts speaking."""
        self.take_back()
        self._first_word = FirstWordDetector(8000)
        self._on_first_word = callback

    def send_dtmf(self, digit: str) -> None:
        """Send a DTMF digit to the far end as RFC 4733 events (needs telephone-event)."""
        stream, remote = self.stream, self.remote
        if stream is None or stream.dtmf_payload_type is None:
            raise DtmfError(f"leg {self.label}: the far end did not accept telephone-event")
        if remote is None:
            return
        self.take_back()
        packets = digit_packets(digit, clock_rate=stream.dtmf_clock_rate)
        event_ssrc, start = secrets.randbits(32), secrets.randbits(32)
        step = FRAME_MS / 1000
        self._muted_until = self.loop.time() + step * len(packets)  # RFC 4733 §2.6

        def send(n: int) -> None:
            marker, payload = packets[n]
            packet = RtpPacket(stream.dtmf_payload_type or 0, n, start, event_ssrc, payload,
                               marker)
            self.take_back()
            self._send(self.outgoing.rewrite(packet, self.loop.time()).to_bytes(), remote)

        for n in range(len(packets)):
            self.loop.call_later(n * step, send, n)

    def play(self, player: Player) -> PlayerFeed:
        """Play ``player`` to the far end (hold audio, ringback, a prompt) until switched."""
        feed = PlayerFeed(self, player)
        self.listen_to(feed)
        feed.start()
        return feed

    def release(self) -> None:
        """The call is forgotten (its listing over): its RTCP session lets go of this leg."""
        self.rtcp.release()

    def close(self) -> None:
        self.listen_to(None)
        self.stop_reading()
        self.rtcp.stop()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._rtcp_sock is not None:
            self.loop.remove_reader(self._rtcp_sock.fileno())
            self._rtcp_sock.close()
            self._rtcp_sock = None
        self.target = None
        self._first_word = self._on_first_word = None  # a closure over its transfer's control
        if self.on_close is not None:
            self.on_close(self)
            self.on_close = None

    # -- receiving --------------------------------------------------------
    def _readable(self) -> None:
        sock = self._sock
        for _ in range(_READ_BATCH):
            if sock is None or not self._reading:
                return  # closed, or handed to the fast path, by the last packet
            try:
                data, addr = sock.recvfrom(MAX_RTP_SIZE + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self._counters.malformed += 1  # an ICMP error surfaced on the socket
                return
            self.datagram_received(data, addr)

    def _rtcp_readable(self) -> None:
        sock = self._rtcp_sock
        if sock is None:
            return
        try:
            data, addr = sock.recvfrom(MAX_RTP_SIZE)
        except OSError:
            return  # nothing there after all, or an ICMP error
        self._receive_rtcp(data, addr)

    def _receive_rtcp(self, data: bytes, addr: tuple[str, int]) -> None:
        srtp = self._srtp
        if srtp is not None:
            try:
                data = srtp.unprotect_rtcp(data)
            except SrtpError:
                self._counters.malformed += 1
                return
        self._counters.rtcp += 1
        self.rtcp.receive(data, addr)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        counters = self._counters
        if len(data) >= 2 and is_rtcp_type(data[1]):
            self._receive_rtcp(data, addr)  # rtcp-mux (RFC 5761 §4)
            return
        srtp = self._srtp
        if srtp is not None:
            try:
                data = srtp.unprotect(data)
            except SrtpError:
                counters.malformed += 1  # forged, replayed or keyed otherwise: dropped
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
        self.remote_ssrc = packet.ssrc
        try:
            self._forward(packet, stream)
        except CodecError:
            counters.malformed += 1  # not audio of its codec: dropped, as the fast path does
            return
        if counters.received >= self._next_offer and self.fast_path is not None \
                and not self.fast_path.offer(self):
            self._next_offer = counters.received + _OFFER_RETRY

    def _forward(self, packet: RtpPacket, stream: AudioStream) -> None:
        if self._reception is not None:
            self._reception.update(packet.sequence, packet.timestamp, self.loop.time())
        if packet.payload_type == stream.dtmf_payload_type:
            self._on_telephone_event(packet)
        elif self._first_word is not None and self.decoder is not None:
            self._listen_for_words(packet)
        if (self._recorder is not None or self._tap is not None) \
                and self.decoder is not None and packet.payload_type == stream.payload_type:
            frame = self.decoder.decode(packet.payload)  # once: G.722's decoder keeps state
            if self._recorder is not None:
                self._recorder(frame)
            if self._tap is not None:
                self._tap.received(frame)
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
        if digit is not None and self._on_dtmf is not None:
            self._on_dtmf(digit)

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
        if self.playing is not None and self.remote != (addr[0], addr[1]):
            self.playing.resume_in_python()  # its loop was going to the address in the SDP
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
        stream, remote = self.stream, self.remote
        if stream is None or remote is None or self._sock is None:
            return
        if self._muted_until and self.loop.time() < self._muted_until:
            return
        if stream.direction in ("recvonly", "inactive"):
            return  # on hold: we agreed not to send (RFC 3264 §5.1)
        if packet.payload_type == source.dtmf_payload_type:
            if stream.dtmf_payload_type is None:
                return
            packet.payload_type = stream.dtmf_payload_type
            if source.dtmf_clock_rate != stream.dtmf_clock_rate:
                packet.payload = _rescale_event(packet.payload, source.dtmf_clock_rate,
                                                stream.dtmf_clock_rate)
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
        if self._tap is not None and packet.payload_type == stream.payload_type:
            self._tap_sent(packet.payload, stream)
        out = self.outgoing.rewrite(packet, self.loop.time(), source.codec.clock_rate)
        self._send(out.to_bytes(), remote)

    def _tap_sent(self, payload: bytes, stream: AudioStream) -> None:
        """What the far end is sent, decoded by the tap's own decoder for the leg's codec."""
        if self._sent_decoder is None:
            self._sent_decoder, _ = _codec_pair(stream)
        if self._sent_decoder is not None and self._tap is not None:
            self._tap.sent(self._sent_decoder.decode(payload))

    def _send_rtcp(self, data: bytes, destination: tuple[str, int]) -> None:
        stream = self.stream
        sock = self._sock if stream is not None and stream.rtcp_mux else self._rtcp_sock
        if sock is None:
            return
        try:
            if self._srtp is not None:
                data = self._srtp.protect_rtcp(data)
            sock.sendto(data, destination)
        except (OSError, SrtpError):
            return  # RTCP is best effort; RTP goes on

    def _send(self, data: bytes, remote: tuple[str, int]) -> None:
        if self._sock is None:
            return
        payload_octets = len(data) - 12
        try:
            if self._srtp is not None:
                data = self._srtp.protect(data)
            self._sock.sendto(data, remote)
        except SrtpError:
            return  # libsrtp refused (a key past its packet limit): nothing sent in clear
        except (BlockingIOError, InterruptedError):
            return  # a full socket buffer drops the packet, as the network would
        except OSError:
            return  # the far end's port is unreachable; RTP goes on regardless
        self._counters.sent += 1
        self._counters.sent_octets += payload_octets


def _transform(current: SrtpTransform | None, stream: AudioStream) -> SrtpTransform | None:
    """The leg's SRTP contexts for ``stream``: each side kept while its key is unchanged."""
    if stream.srtp is None:
        return None
    if current is not None and current.keys == stream.srtp:
        return current
    return SrtpTransform(stream.srtp, keep_from=current)


def _rescale_event(payload: bytes, source_rate: int, target_rate: int) -> bytes:
    """An RFC 4733 event whose duration (bytes 2-3, in its clock's units) is re-counted
    on the target's telephone-event clock; what is not an event passes unchanged."""
    if len(payload) < 4:
        return payload
    duration = int.from_bytes(payload[2:4], "big") * target_rate // source_rate
    return payload[:2] + min(duration, 0xFFFF).to_bytes(2, "big") + payload[4:]


def _add(counters: LegCounters, counts: tuple[int, ...]) -> None:
    received, sent, malformed, unknown_payload, wrong_source, rtcp, sent_octets = counts
    counters.received += received
    counters.sent += sent
    counters.malformed += malformed
    counters.unknown_payload += unknown_payload
    counters.wrong_source += wrong_source
    counters.rtcp += rtcp
    counters.sent_octets += sent_octets


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

    def start(self, immediately: bool = True) -> None:
        """Tick now (or one frame from now) and every 20 ms after."""
        self._started, self._ticks = self.loop.time(), 0
        if immediately:
            self._fire()
        else:
            self._fire_later()

    def _fire_later(self) -> None:
        self._handle = self.loop.call_at(self._started + (self._ticks + 1) * FRAME_MS / 1000,
                                         self._fire)
        self._ticks += 1

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._fire_later()
        self.tick()


class MediaClock:
    """One 20 ms tick for every feed playing on a loop, instead of a timer each.

    A timer a leg costs the loop a heap push and pop and a callback every
    20 ms per call on hold; one shared tick walks the feeds in a plain loop.
    Feeds join and leave at any time (a feed that stops during a tick leaves
    at once); the tick runs only while somebody plays.
    """

    _by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, MediaClock] = \
        weakref.WeakKeyDictionary()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._feeds: dict[int, Callable[[], None]] = {}
        self._pacer = Pacer(loop, self._tick)

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> MediaClock:
        clock = cls._by_loop.get(loop)
        if clock is None:
            clock = cls._by_loop[loop] = cls(loop)
        return clock

    @property
    def feeds(self) -> int:
        return len(self._feeds)

    def join(self, key: int, tick: Callable[[], None]) -> None:
        self._feeds[key] = tick
        if not self._pacer.running:
            self._pacer.start(immediately=False)  # a feed sends its first packet itself

    def leave(self, key: int) -> None:
        self._feeds.pop(key, None)
        if not self._feeds:
            self._pacer.stop()

    def _tick(self) -> None:
        for key, tick in list(self._feeds.items()):
            if key in self._feeds:  # not left during this tick
                tick()


class _EncodedLoops:
    """Frames of looped audio (hold music, ringback), encoded once per stateless codec.

    Every caller on hold hears the same buffer, so at hundreds of calls the
    same 20 ms of G.711 was encoded hundreds of times a second. Keyed by the
    buffer itself (held here, so its id cannot be reused), the frame's offset
    and the codec; at most ``MAX_BUFFERS`` buffers, the least recent dropped.
    """

    MAX_BUFFERS = 8

    def __init__(self) -> None:
        self._by_buffer: OrderedDict[int, tuple[Samples, dict[tuple[int, type], bytes]]] = \
            OrderedDict()
        self._whole: OrderedDict[tuple[int, type], tuple[Samples, bytes]] = OrderedDict()

    def whole(self, player: Player, encoder: Codec) -> bytes | None:
        """Every frame of a looped player's buffer, encoded, for the compiled fast path to
        loop; None unless the loop is whole frames of a stateless codec."""
        samples = player.samples
        if not player.loop or not is_stateless(encoder) or not len(samples) \
                or len(samples) % player.frame:
            return None
        key = (id(samples), type(encoder))
        entry = self._whole.get(key)
        if entry is None or entry[0] is not samples:
            entry = (samples, encoder.encode(samples))
            self._whole[key] = entry
            while len(self._whole) > self.MAX_BUFFERS:
                self._whole.popitem(last=False)
        else:
            self._whole.move_to_end(key)
        return entry[1]

    def payload(self, player: Player, encoder: Codec) -> bytes:
        if not player.loop or not is_stateless(encoder):
            return encoder.encode(player.next_frame())
        key = id(player.samples)
        entry = self._by_buffer.get(key)
        if entry is None or entry[0] is not player.samples:
            entry = (player.samples, {})
            self._by_buffer[key] = entry
            while len(self._by_buffer) > self.MAX_BUFFERS:
                self._by_buffer.popitem(last=False)
        else:
            self._by_buffer.move_to_end(key)
        frames = entry[1]
        slot = (player.position, type(encoder))
        frame = player.next_frame()  # advances the player (cheap: a slice)
        payload = frames.get(slot)
        if payload is None:
            payload = frames[slot] = encoder.encode(frame)
        return payload


_ENCODED_LOOPS = _EncodedLoops()


class PlayerFeed:
    """Plays a :class:`Player` into a leg, one 20 ms packet per tick.

    A looped player on a G.711 leg moves to the compiled fast path once it has
    played a tenth of a second (hold music for a queue of callers then costs the event loop
    nothing); the leg's :meth:`RelayLeg.take_back`, called before anything
    changes what the leg sends, brings it back here, and it is offered again
    a second later.
    """

    def __init__(self, leg: RelayLeg, player: Player) -> None:
        self.leg = leg
        self.player = player
        self.source = SyntheticSource()
        self.clock = MediaClock.of(leg.loop)
        self.done: asyncio.Future[None] = leg.loop.create_future()  # played out or stopped
        self.compiled: Playback | None = None  # while the fast path sends the loop
        self._ticks = 0
        self._next_offer = _FIRST_LOOP_OFFER  # the tick at which to offer the loop to the fast path

    def start(self) -> None:
        """The first packet now (a switch of source leaves no gap), then on the clock."""
        self.clock.join(id(self), self._tick)
        self._tick()

    def stop(self) -> None:
        self.resume_in_python()
        self.clock.leave(id(self))
        if not self.done.done():
            self.done.set_result(None)

    def resume_in_python(self) -> None:
        """Take the loop back from the fast path, where it left off, onto the loop's clock."""
        compiled, fast_path = self.compiled, self.leg.fast_path
        if compiled is None or fast_path is None:
            return
        self.compiled = None
        self.leg.playing = None
        position, *source = fast_path.stop_playing(compiled, self.leg)
        self.player.position = position * self.player.frame
        self.source.ssrc, self.source.sequence, self.source.timestamp = source
        self._next_offer = self._ticks + _OFFER_RETRY
        self.clock.join(id(self), self._tick)

    def _tick(self) -> None:
        leg, stream = self.leg, self.leg.stream
        if leg.source is not self or self.player.finished:
            self.stop()
            return
        if self.compiled is not None:
            return  # the fast path sends the loop (a tick already due when it went there)
        if stream is not None and leg.encoder is not None:
            payload = _ENCODED_LOOPS.payload(self.player, leg.encoder)
            leg.send_from(self.source.packet(stream.payload_type, payload,
                                             stream.codec.clock_rate), stream)
            self._ticks += 1
            if self._ticks >= self._next_offer and leg.fast_path is not None:
                self._offer(leg, stream, leg.fast_path, leg.encoder)

    def _offer(self, leg: RelayLeg, stream: AudioStream, fast_path: FastPath,
               encoder: Codec) -> None:
        self._next_offer = self._ticks + _OFFER_RETRY
        frames = _ENCODED_LOOPS.whole(self.player, encoder)
        if frames is None or leg.playing is not None:
            return
        step = round(stream.codec.clock_rate * SyntheticSource.FRAME_SECONDS)
        position = self.player.position // self.player.frame % (len(frames) // self.player.frame)
        self.compiled = fast_path.play(leg, frames, self.player.frame, position,
                                       (self.source.ssrc, self.source.sequence,
                                        self.source.timestamp, step))
        if self.compiled is not None:
            leg.playing = self
            self.clock.leave(id(self))


