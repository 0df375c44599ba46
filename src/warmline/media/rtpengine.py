"""rtpengine as the media plane: every leg anchored by rtpengine, its audio work done behind it.

Design (docs/media-planes.md has the feature table): each leg is one
rtpengine call of two monologues. Tag ``far`` faces the phone (the caller,
the human): its port is the leg's ``local`` address, the one our SDP
announces, so the public RTP address of every call is rtpengine's. Tag
``relay`` faces an embedded relay leg (relay_leg.py) that warmline keeps
behind it on the same host, and that inner leg does everything the
interface asks: routing one leg into another, hold audio, whisper to one
side, the mix, DTMF both ways, first-word detection, recording taps, the
bot's stream, SRTP (passed through rtpengine untouched, end to end).

So no call or transfer logic changes, and every feature keeps its behaviour,
including the seamless switch (one continuous stream at the caller). By
default the bridged audio of a caller and a human still passes through
warmline (rtpengine -> relay -> rtpengine), so it does not outlive warmline's
process; what rtpengine adds is the anchor (its addresses, its latching, its
port range) and a control point another node could take over. With
``bridge=True`` (``[media] rtpengine_bridge``) a plain bridged pair is handed
to rtpengine itself: each call's relay side is pointed at the other call's
relay-facing port, and warmline is out of the path until something needs it
again. The phones then receive each other's own SSRC and sequence, which
some drop (docs/media-planes.md), hence off by default.

``configure`` must not block (the interface is synchronous), so the far
end's address and codec reach rtpengine in a per-leg queue of ng commands;
``port latching`` keeps rtpengine's ports across those re-negotiations. A
failure there is logged and the stream goes on as rtpengine had it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import re
import secrets
from collections.abc import Callable, Coroutine
from enum import StrEnum
from typing import Any

from warmline.media.fastpath import eligible
from warmline.media.ng import BValue, NgClient, RtpengineError
from warmline.media.plane import (
    AudioTap,
    LegAddress,
    LegCounters,
    MediaLeg,
    MediaMix,
    MediaPlane,
    Playback,
)
from warmline.media.player import Player, Samples
from warmline.media.relay import EmbeddedRelay, RelayLeg
from warmline.media.rtcp import ReceptionStats, ReportBlock
from warmline.media.sdp import AudioStream

log = logging.getLogger("warmline.media.rtpengine")

_FLAGS: list[BValue] = ["port latching", "no rtcp attribute"]
_PLACEHOLDER_PORT = 9  # discard: the far end's address is not known before configure
_PING_INTERVAL = 2.0
_WATCH_INTERVAL = 0.1  # how often bridged pairs are checked for handing to rtpengine


class PlaneKind(StrEnum):
    """``[media] plane``: which MediaPlane a node runs."""

    EMBEDDED = "embedded"
    RTPENGINE = "rtpengine"


def parse_ng_address(text: str) -> tuple[str, int]:
    """``udp:HOST:PORT`` (``udp:[v6]:PORT``) -> (host, port); ValueError saying what is wrong."""
    match = re.fullmatch(r"udp:(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]+)):(\d{1,5})", text)
    if match is None:
        raise ValueError(f"{text!r} is not udp:HOST:PORT, e.g. udp:127.0.0.1:2223")
    port = int(match.group(3))
    if not 1 <= port <= 65535:
        raise ValueError(f"{text!r}: port {port} is out of range")
    return match.group(1) or match.group(2), port


def describe(host: str, port: int, payloads: list[tuple[int, str]], *, mux: bool = False,
             ) -> str:
    """A one-stream SDP for rtpengine: where one side is and which payload types it uses."""
    family = "IP6" if ":" in host else "IP4"
    lines = ["v=0", f"o=- 1 1 IN {family} {host}", "s=-", f"c=IN {family} {host}", "t=0 0",
             f"m=audio {port} RTP/AVP {' '.join(str(pt) for pt, _ in payloads)}"]
    lines += [f"a=rtpmap:{pt} {name}" for pt, name in payloads]
    lines.append("a=sendrecv")
    if mux:
        lines.append("a=rtcp-mux")
    return "\r\n".join(lines) + "\r\n"


def payloads_of(stream: AudioStream | None) -> list[tuple[int, str]]:
    """(payload type, rtpmap) of the agreed codec and telephone-event; G.711 before agreement."""
    if stream is None:
        return [(0, "PCMU/8000"), (8, "PCMA/8000")]
    codec = stream.codec
    rtpmap = f"{codec.name}/{codec.clock_rate}" + (f"/{codec.channels}" if codec.channels > 1
                                                   else "")
    found = [(stream.payload_type, rtpmap)]
    if stream.dtmf_payload_type is not None:
        found.append((stream.dtmf_payload_type, f"telephone-event/{stream.dtmf_clock_rate}"))
    return found


def media_address(reply: dict[str, BValue]) -> tuple[str, int]:
    """The c= address and m=audio port of the SDP in an offer or answer reply."""
    sdp = reply.get("sdp")
    if not isinstance(sdp, bytes):
        raise RtpengineError("rtpengine replied without SDP")
    port = re.search(rb"^m=audio (\d+) ", sdp, re.MULTILINE)
    host = re.search(rb"^c=IN IP[46] (\S+)", sdp, re.MULTILINE)
    if port is None or host is None:
        raise RtpengineError("rtpengine's SDP has no audio address")
    return host.group(1).decode(), int(port.group(1))


class RtpengineLeg:
    """A :class:`MediaLeg` anchored by rtpengine: the far end talks to rtpengine's port,
    rtpengine to ``inner`` (an embedded relay leg) that does the leg's work."""

    def __init__(self, plane: RtpenginePlane, inner: RelayLeg, call_id: str,
                 local: LegAddress, relay_facing: tuple[str, int]) -> None:
        self.plane = plane
        self.inner = inner
        self.call_id = call_id
        self._local = local
        self.relay_facing = relay_facing  # where the inner leg sends, on rtpengine
        self._queue: asyncio.Queue[Callable[[], Coroutine[Any, Any, None]]] = asyncio.Queue()
        self._worker = asyncio.get_running_loop().create_task(self._drain())
        self.closed = False
        self.stream: AudioStream | None = None  # as negotiated with the far end
        self.direct: RtpengineLeg | None = None  # the leg rtpengine bridges us to, itself
        self.direct_since: float | None = None
        self._direct_counts = LegCounters()  # rtpengine's counts while it bridges
        self._direct_base: tuple[int, int] = (0, 0)  # its counters when the bridge began
        self._direct_before = LegCounters()  # counted in earlier bridges

    # -- what the interface reads
    @property
    def local(self) -> LegAddress:
        return self._local

    @property
    def anchor(self) -> str | None:
        """rtpengine's call: it goes on forwarding after we die, until released."""
        return self.call_id

    @property
    def counters(self) -> LegCounters:
        """The relay leg's counters, plus what rtpengine forwarded while it bridged us
        (so the silence watchdog sees a bridged caller talking)."""
        inner, extra = self.inner.counters, self._direct_counts
        if not (extra.received or extra.sent):
            return inner
        return dataclasses.replace(inner, received=inner.received + extra.received,
                                   sent=inner.sent + extra.sent)

    @property
    def reception(self) -> ReceptionStats | None:
        return self.inner.reception

    @property
    def far_end_report(self) -> ReportBlock | None:
        return self.inner.far_end_report

    # -- negotiation: the inner leg at once, rtpengine in order behind it
    def configure(self, stream: AudioStream) -> None:
        self._leave()
        self.stream = stream
        host, port = self.relay_facing
        self.inner.configure(dataclasses.replace(
            stream, remote_address=host, remote_port=port,
            remote_rtcp_port=None if stream.rtcp_mux else port + 1))
        self._queue.put_nowait(lambda: self._tell_rtpengine(stream))

    async def _tell_rtpengine(self, stream: AudioStream,
                              send_to: tuple[str, int] | None = None) -> None:
        """Offer from the relay side (``send_to``, else the inner leg), then the far end's
        answer: rtpengine sends what the far end says to that address."""
        payloads = payloads_of(stream)
        host, port = send_to or (self.inner.local.host, self.inner.local.port)
        await self.plane.client.command(
            "offer", sdp=describe(host, port, payloads, mux=stream.rtcp_mux),
            flags=list(_FLAGS), **self._tags(answer=False))
        await self.plane.client.command(
            "answer", sdp=describe(stream.remote_address, stream.remote_port, payloads,
                                   mux=stream.rtcp_mux),
            flags=list(_FLAGS), **self._tags(answer=True))

    def _tags(self, *, answer: bool) -> dict[str, BValue]:
        tags: dict[str, BValue] = {"call-id": self.call_id, "from-tag": "relay"}
        if answer:
            tags["to-tag"] = "far"
        return tags

    async def _drain(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await job()
            except RtpengineError as error:
                log.warning("rtpengine leg %s (%s): %s", self.inner.label, self.call_id, error)
            except Exception:  # a bug in one job must not silence the leg's later ones,
                log.exception("rtpengine leg %s (%s): a command failed", self.inner.label,
                              self.call_id)  # its delete above all
            if self.closed and self._queue.empty():
                return  # the delete was the last job: nothing re-creates the call after it

    # -- rtpengine bridging a pair itself
    def enter_direct(self, peer: RtpengineLeg) -> None:
        """rtpengine forwards between our far end and ``peer``'s, warmline out of the path:
        each call's relay side is pointed at the other call's relay-facing port."""
        assert self.stream is not None and peer.stream is not None
        self.direct, peer.direct = peer, self
        self.direct_since = peer.direct_since = asyncio.get_running_loop().time()
        self._queue.put_nowait(self._pointer(self.stream, peer.relay_facing))
        peer._queue.put_nowait(peer._pointer(peer.stream, self.relay_facing))
        log.info("media: rtpengine bridges %s and %s directly", self.call_id, peer.call_id)

    def _pointer(self, stream: AudioStream, to: tuple[str, int] | None,
                 ) -> Callable[[], Coroutine[Any, Any, None]]:
        async def job() -> None:
            await self._tell_rtpengine(stream, to)
            if to is not None:
                self._direct_base = await self.plane.far_counts(self.call_id)
                self._direct_before = self._direct_counts
        return job

    def _leave(self) -> None:
        """Back through the relay leg before it changes what it sends or hears."""
        peer = self.direct
        if peer is None:
            return
        self.direct = peer.direct = None
        self.direct_since = peer.direct_since = None
        for leg in (self, peer):
            if leg.stream is not None and not leg.closed:
                leg._queue.put_nowait(leg._pointer(leg.stream, None))
        log.info("media: %s and %s back through warmline", self.call_id, peer.call_id)

    async def refresh_direct_counts(self) -> None:
        """While rtpengine bridges us, its packet counts feed ``counters``."""
        if self.direct is None:
            return
        received, sent = await self.plane.far_counts(self.call_id)
        base_received, base_sent = self._direct_base
        before = self._direct_before
        self._direct_counts = LegCounters(
            received=before.received + max(0, received - base_received),
            sent=before.sent + max(0, sent - base_sent))

    # -- everything else is the inner leg's
    def route_to(self, target: MediaLeg | None) -> None:
        if target is not None and not isinstance(target, RtpengineLeg):
            raise TypeError(f"an rtpengine leg cannot be routed to {type(target).__name__}")
        self._leave()
        if target is not None:
            target._leave()
        self.inner.route_to(target.inner if target is not None else None)

    def play(self, player: Player) -> Playback:
        self._leave()
        return self.inner.play(player)

    def silence(self) -> None:
        self._leave()
        self.inner.silence()

    def record(self, sink: Callable[[Samples], None] | None) -> None:
        if sink is not None:
            self._leave()
        self.inner.record(sink)

    def capture(self, tap: AudioTap | None) -> None:
        if tap is not None:
            self._leave()
        self.inner.capture(tap)

    @property
    def on_dtmf(self) -> Callable[[str], None] | None:
        return self.inner.on_dtmf

    @on_dtmf.setter
    def on_dtmf(self, callback: Callable[[str], None] | None) -> None:
        if callback is not None:
            self._leave()
        self.inner.on_dtmf = callback

    def detect_first_word(self, callback: Callable[[float], None]) -> None:
        self._leave()
        self.inner.detect_first_word(callback)

    def send_dtmf(self, digit: str) -> None:
        self._leave()
        self.inner.send_dtmf(digit)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._leave()  # the peer back to its relay leg (nothing queued for us: closed)
        self.inner.close()
        self._queue.put_nowait(lambda: self.plane.delete(self.call_id))  # after what is queued
        self.plane.forget(self, self._worker)


class RtpengineMix:
    """The embedded relay's conference over the legs' inner relay legs."""

    def __init__(self, plane: RtpenginePlane) -> None:
        self.mix = plane.relay.open_mix()

    def join(self, leg: MediaLeg) -> None:
        if not isinstance(leg, RtpengineLeg):
            raise TypeError(f"an rtpengine mix cannot take {type(leg).__name__}")
        leg._leave()
        self.mix.join(leg.inner)

    def speak(self, player: Player) -> asyncio.Future[None]:
        return self.mix.speak(player)

    def close(self) -> None:
        self.mix.close()


class RtpenginePlane:
    """The :class:`MediaPlane` on rtpengine at ``client``, with ``relay`` behind it.

    ``healthy`` follows rtpengine's answers: a ping every 2 s while the plane
    runs, and every command's outcome. While it is down ``spare_legs`` is 0 and
    ``open_leg`` fails with RtpengineError (an OSError: the caller gets 503).
    """

    def __init__(self, client: NgClient, relay: EmbeddedRelay, *, bridge: bool = False) -> None:
        self.client = client
        self.relay = relay
        self.bridge = bridge  # let rtpengine bridge plain pairs itself
        self.legs: dict[str, RtpengineLeg] = {}
        self._prefix = f"warmline-{secrets.token_hex(4)}-"
        self._counter = 0
        self._healthy = True
        self._pinger: asyncio.Task[None] | None = None
        self._deleting: set[asyncio.Task[None]] = set()

    def start(self) -> None:
        """Begin pinging rtpengine (for /readyz)."""
        if self._pinger is None:
            self._pinger = asyncio.get_running_loop().create_task(self._ping_forever())

    def healthy(self) -> bool:
        return self._healthy

    async def ping(self) -> bool:
        try:
            await self.client.command("ping")
        except RtpengineError as error:
            if self._healthy:
                log.error("media plane: %s", error)
            self._healthy = False
        else:
            if not self._healthy:
                log.warning("media plane: rtpengine at %s answers again", self.client.label)
            self._healthy = True
        return self._healthy

    async def _ping_forever(self) -> None:
        ticks = 0
        while True:
            if ticks % round(_PING_INTERVAL / _WATCH_INTERVAL) == 0:
                await self.ping()
                for leg in list(self.legs.values()):
                    await self._quietly(leg.refresh_direct_counts())
            if self.bridge:
                self.hand_over_plain_pairs()
            ticks += 1
            await asyncio.sleep(_WATCH_INTERVAL)

    async def _quietly(self, job: Coroutine[Any, Any, None]) -> None:
        try:
            await job
        except RtpengineError as error:
            log.warning("media plane: %s", error)

    def hand_over_plain_pairs(self) -> int:
        """Give rtpengine every bridged pair that needs nothing from warmline: routed to
        each other, both latched and sendrecv, the same payload types, no SRTP, nobody
        listening (digits, first word, recording), no mix, nothing pending or muted;
        the relay's own fast-path test. Returns how many pairs were handed over."""
        by_inner = {id(leg.inner): leg for leg in self.legs.values()}
        handed = 0
        for leg in list(self.legs.values()):
            target = leg.inner.target
            peer = by_inner.get(id(target)) if target is not None else None
            if peer is None or leg.direct is not None or peer.direct is not None \
                    or id(leg) > id(peer) or not _plain_pair(leg, peer):
                continue
            leg.enter_direct(peer)
            handed += 1
        return handed

    async def far_counts(self, call_id: str) -> tuple[int, int]:
        """(RTP packets from the far end, to it) as rtpengine counts them for a leg."""
        reply = await self.client.command("query", **{"call-id": call_id})
        return _packets(reply, "far"), _packets(reply, "relay")

    async def open_leg(self, label: str) -> RtpengineLeg:
        inner = await self.relay.open_leg(label)
        self._counter += 1
        call_id = f"{self._prefix}{self._counter}"
        try:
            far, relay_facing = await self._anchor(call_id, inner)
        except RtpengineError as error:
            inner.close()
            self._healthy = False
            log.error("media plane: no %s leg: %s", label, error)
            raise
        self._healthy = True
        leg = RtpengineLeg(self, inner, call_id, LegAddress(*far), relay_facing)
        self.legs[call_id] = leg
        return leg

    async def _anchor(self, call_id: str, inner: RelayLeg,
                      ) -> tuple[tuple[str, int], tuple[str, int]]:
        """Offer from the inner leg, answer from a placeholder far end: (the far end's
        address on rtpengine, the inner leg's address on rtpengine)."""
        tags: dict[str, BValue] = {"call-id": call_id, "from-tag": "relay"}
        payloads = payloads_of(None)
        offer = await self.client.command(
            "offer", sdp=describe(inner.local.host, inner.local.port, payloads),
            flags=list(_FLAGS), **tags)
        placeholder = "::1" if ":" in inner.local.host else "127.0.0.1"
        answer = await self.client.command(
            "answer", sdp=describe(placeholder, _PLACEHOLDER_PORT, payloads),
            flags=list(_FLAGS), **tags, **{"to-tag": "far"})
        return media_address(offer), media_address(answer)

    def open_mix(self) -> RtpengineMix:
        return RtpengineMix(self)

    def spare_legs(self) -> int:
        return self.relay.spare_legs() if self._healthy else 0

    def forget(self, leg: RtpengineLeg, worker: asyncio.Task[None]) -> None:
        """A closed leg: its queue ends with the delete; close() waits for it."""
        self.legs.pop(leg.call_id, None)
        self._deleting.add(worker)
        worker.add_done_callback(self._deleting.discard)

    def release(self, anchor: str) -> None:
        """Delete a dead node's rtpengine call for a leg its heir moved to its own."""
        task = asyncio.get_running_loop().create_task(self.delete(anchor))
        self._deleting.add(task)
        task.add_done_callback(self._deleting.discard)

    async def delete(self, call_id: str) -> None:
        """Delete a leg's rtpengine call now (failures logged: rtpengine's own timeout
        removes a call whose media stopped)."""
        try:
            fields: dict[str, BValue] = {"call-id": call_id, "delete delay": 0}
            await self.client.command("delete", **fields)
        except RtpengineError as error:
            log.warning("media plane: rtpengine call %s not deleted: %s", call_id, error)

    async def close(self) -> None:
        if self._pinger is not None:
            self._pinger.cancel()
            self._pinger = None
        for leg in list(self.legs.values()):
            leg.close()
        if self._deleting:
            await asyncio.wait(set(self._deleting), timeout=2.0)
        for worker in list(self._deleting):  # rtpengine gone: its own timeout cleans up
            worker.cancel()
        self.client.close()
        await self.relay.close()


def _plain_pair(a: RtpengineLeg, b: RtpengineLeg) -> bool:
    """Whether rtpengine can forward between the two far ends untouched (see
    :meth:`RtpenginePlane.hand_over_plain_pairs`)."""
    if a.closed or b.closed or a.stream is None or b.stream is None \
            or not (a._queue.empty() and b._queue.empty()):
        return False
    same_audio = (a.stream.payload_type, a.stream.codec.key) == \
        (b.stream.payload_type, b.stream.codec.key)
    # telephone-events pass with their payload type: the same on both sides, or a side that
    # agreed none (it ignores them, as it would ignore the relay dropping them)
    events = {a.stream.dtmf_payload_type, b.stream.dtmf_payload_type} - {None}
    same_event_clock = a.stream.dtmf_clock_rate == b.stream.dtmf_clock_rate  # none rescaled
    return same_audio and len(events) <= 1 and same_event_clock and eligible(a.inner, b.inner)


def _packets(reply: dict[str, BValue], tag: str) -> int:
    """RTP packets rtpengine received on ``tag``'s stream (what it forwards to the other)."""
    found: Any = reply  # a nested reply; whatever is missing or mistyped is the error below
    try:
        return int(found["tags"][tag]["medias"][0]["streams"][0]["stats"]["packets"])
    except (KeyError, IndexError, TypeError, ValueError):
        raise RtpengineError("rtpengine's query reply has no packet counts") from None


def _conforms(plane: RtpenginePlane, leg: RtpengineLeg, mix: RtpengineMix,
              ) -> tuple[MediaPlane, MediaLeg, MediaMix]:
    """Never called: mypy proves here that the plane, its legs and mixes implement plane.py."""
    return plane, leg, mix
