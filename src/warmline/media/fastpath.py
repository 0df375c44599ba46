"""Hands plainly bridged leg pairs to the compiled forwarder (_fastpath.c) and back.

A Python relay pays the interpreter for every packet; once a caller and a
human are simply bridged, nothing about their packets needs it. A pair goes
to the forwarder's thread when both legs are latched, routed to each other,
sending both ways, on codecs the forwarder converts between (one codec,
PCMU<->PCMA, or any two of G.711, G.722 and Opus transcoded on its thread:
``TRANSCODES`` of the compiled module; G.722 is compiled in, Opus needs
libopus) and nobody is listening in
(no DTMF callback, no first-word detector, no conference, no DTMF being
sent) and neither leg uses SRTP. Anything that changes that takes the pair
back first (relay_leg.py calls :meth:`FastPath.reclaim`), with the outgoing
streams' sequence/timestamp state, the reception statistics, the latched
addresses and the counters, so neither far end sees a seam either way.

SRTP legs stay in Python: the forwarder does not link libsrtp, and for an
SRTP pair the per-packet cost is mostly the AES and HMAC work that libsrtp
does in C either way (bench/srtp_relay.py measures what is left).

Without a compiled forwarder (no gcc, or ``WARMLINE_FASTPATH=0``) the relay
forwards every packet in Python, with the same results.

What this module needs of a leg is :class:`BridgedLeg`, declared here, so it
does not import relay_leg.py, which imports it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

from warmline.media.rtcp import ReceptionState, ReceptionStats
from warmline.media.rtp import ContinuousStream
from warmline.media.sdp import AudioStream

_TRANSLATION = {("pcmu", "pcma"): 1, ("pcma", "pcmu"): 2}
_TRANSCODE = 3  # decode the peer's payload, encode this leg's (_fastpath.c)
# _fastpath.c's CODEC_*; 0: anything else
_CODEC_IDS = {"pcmu": 1, "pcma": 2, "opus": 3, "g722": 4}
# a pair transcoded through Opus costs its thread ~100 us a packet pair (libopus), through
# G.722 ~20 (our codec), against ~10 for a plain pair or a loop: the weight the least
# loaded thread is chosen by
TRANSCODED_LOAD = 10
G722_LOAD = 2


def _weight(leg: BridgedLeg, peer: BridgedLeg) -> int:
    """What a transcoded pair weighs on its thread (see TRANSCODED_LOAD)."""
    keys = {leg.stream.codec.key, peer.stream.codec.key} if leg.stream and peer.stream else set()
    return TRANSCODED_LOAD if "opus" in keys else G722_LOAD


def _codec_id(key: str, transcodes: frozenset[str]) -> int:
    """_fastpath.c's id for a codec it transcodes (``transcodes``, FastPath's); 0 (any
    other) for one it does not, as a build older than the codec would refuse its id (a
    pass-through pair needs none)."""
    return _CODEC_IDS.get(key, 0) if key in transcodes else 0


def _load_forwarder() -> ModuleType | None:
    if os.environ.get("WARMLINE_FASTPATH", "1") == "0":
        return None
    try:
        from warmline.media import _fastpath  # type: ignore[attr-defined]
    except ImportError:
        return None
    module: ModuleType = _fastpath
    return module


def describe_forwarder() -> str:
    """What ``warmline --version`` and the start of ``serve`` say about the relay."""
    if _load_forwarder() is not None:
        return "relay fast path compiled"
    if os.environ.get("WARMLINE_FASTPATH", "1") == "0":
        return "relay fast path off (WARMLINE_FASTPATH=0)"
    return "relay fast path not compiled: every RTP packet in Python"


class BridgedLeg(Protocol):
    """What the fast path reads and changes on a leg (relay_leg.RelayLeg).

    The read-only members decide whether a pair qualifies; ``offload`` and
    ``remote`` are written back, with the rest of the forwarder's state, when
    the pair returns to Python. Whatever only has to be "set or not" (a
    pending source, a conference, a DTMF callback) is typed ``object``.
    """

    offload: Offload | None
    remote: tuple[str, int] | None

    @property
    def target(self) -> BridgedLeg | None: ...
    @property
    def source(self) -> object: ...
    @property
    def pending(self) -> object: ...
    @property
    def stream(self) -> AudioStream | None: ...
    @property
    def latched(self) -> bool: ...
    @property
    def reception(self) -> ReceptionStats | None: ...
    @property
    def open(self) -> bool: ...
    @property
    def conference(self) -> object: ...
    @property
    def on_dtmf(self) -> object: ...
    @property
    def listening_for_words(self) -> bool: ...
    @property
    def muted(self) -> bool: ...
    @property
    def outgoing(self) -> ContinuousStream: ...
    def fileno(self) -> int: ...
    def stop_reading(self) -> None: ...
    def start_reading(self) -> None: ...
    def add_counters(self, counts: tuple[int, ...]) -> None: ...


@dataclass(eq=False)
class Offload:
    """A pair of legs a forwarder thread currently owns."""

    legs: tuple[BridgedLeg, BridgedLeg]
    slots: tuple[int, int]
    thread: int = 0  # which of the fast path's forwarder threads
    load: int = 1  # what it weighs on that thread (TRANSCODED_LOAD when transcoded)


@dataclass(eq=False)
class Playback:
    """A leg whose looped audio a forwarder thread currently sends."""

    slot: int
    thread: int
    load: int = 1


def can_play(leg: BridgedLeg) -> bool:
    """Whether a loop played to ``leg`` needs nothing of Python but the frames: the leg
    sends (not on hold), in clear, and nothing listens to what it is sent."""
    stream = leg.stream
    return (stream is not None and stream.direction in ("sendrecv", "sendonly")
            and stream.srtp is None and leg.remote is not None and leg.reception is not None
            and leg.open and leg.offload is None and not leg.muted and leg.conference is None
            and not leg.listening_for_words)


def default_threads() -> int:
    """One forwarder thread per CPU this process may run on: a transcoded pair costs a
    thread ~100 us a packet pair (libopus), so one thread would hold ~200 Opus calls."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _plain(leg: BridgedLeg) -> bool:
    stream = leg.stream
    return (stream is not None and stream.direction == "sendrecv" and stream.srtp is None
            and leg.latched
            and leg.remote is not None and leg.reception is not None and leg.open
            and leg.conference is None and leg.on_dtmf is None and not leg.listening_for_words
            and not leg.muted and leg.pending is None)


def eligible(a: BridgedLeg, b: BridgedLeg, transcodes: frozenset[str] = frozenset()) -> bool:
    """Whether the pair's packets need nothing that only Python does; ``transcodes`` are
    the codecs the forwarder decodes and encodes itself (sdp.py's keys: pcmu, pcma, g722,
    and opus when libopus loads)."""
    if not (a.target is b and b.target is a and a.source is b and b.source is a):
        return False
    if not (_plain(a) and _plain(b)):
        return False
    assert a.stream is not None and b.stream is not None
    key_a, key_b = a.stream.codec.key, b.stream.codec.key
    if key_a == key_b or (key_a, key_b) in _TRANSLATION:
        return a.stream.codec.clock_rate == b.stream.codec.clock_rate
    return key_a in transcodes and key_b in transcodes


def _conversion(source: AudioStream, target: AudioStream) -> int:
    """What the forwarder does to audio from ``source`` before it goes out on ``target``."""
    if source.codec.key == target.codec.key:
        return 0
    return _TRANSLATION.get((source.codec.key, target.codec.key), _TRANSCODE)


class FastPath:
    """The relay's handle on its compiled forwarder threads; a pair stays on one thread,
    and a new pair goes to the thread holding the fewest."""

    def __init__(self, module: ModuleType, threads: int = 1) -> None:
        if threads < 1:
            raise ValueError(f"media.relay_threads: {threads} is not a thread count")
        self._forwarders: list[Any] = [module.Forwarder() for _ in range(threads)]
        self._load = [0] * threads  # what each thread carries now (pairs and loops, weighed)
        self.transcodes = frozenset(getattr(module, "TRANSCODES", ()))
        self.offloads = 0  # pairs handed over, for the records and the tests

    @classmethod
    def create(cls, threads: int = 0) -> FastPath | None:
        """The compiled fast path with ``threads`` forwarders (0: default_threads()), or
        None when it is not built or turned off."""
        module = _load_forwarder()
        return None if module is None else cls(module, threads or default_threads())

    @property
    def threads(self) -> int:
        return len(self._forwarders)

    @property
    def load(self) -> tuple[int, ...]:
        """What each forwarder thread carries now: pairs and loops, weighed."""
        return tuple(self._load)

    def offer(self, leg: BridgedLeg) -> bool:
        """Hand ``leg`` and its peer over if they qualify; True if they now run compiled."""
        peer = leg.target
        if leg.offload is not None or peer is None or not eligible(leg, peer, self.transcodes):
            return False
        thread = self._load.index(min(self._load))
        specs = _spec(leg, peer, self.transcodes), _spec(peer, leg, self.transcodes)
        load = _weight(leg, peer) if _TRANSCODE in (specs[0][7], specs[1][7]) else 1
        leg.stop_reading()
        peer.stop_reading()
        try:
            slots = self._forwarders[thread].bridge(*specs)
        except (OSError, OverflowError, ValueError):
            leg.start_reading()
            peer.start_reading()
            return False
        offload = Offload((leg, peer), slots, thread, load)
        leg.offload = peer.offload = offload
        self._load[thread] += load
        self.offloads += 1
        return True

    def reclaim(self, offload: Offload) -> None:
        """Take the pair back into Python with everything the forwarder learnt."""
        states = self._forwarders[offload.thread].release(*offload.slots)
        self._load[offload.thread] -= offload.load
        for leg, state in zip(offload.legs, states, strict=True):
            leg.offload = None
            host, port, reception, outgoing, counters = state
            leg.remote = (host, port)
            if leg.reception is not None:
                leg.reception.restore_state(reception)
            leg.outgoing.restore_state(outgoing)
            leg.add_counters(counters)
            leg.start_reading()

    def play(self, leg: BridgedLeg, frames: bytes, frame_length: int, position: int,
             source: tuple[int, int, int, int]) -> Playback | None:
        """Loop ``frames`` (encoded for the leg, ``frame_length`` bytes each) to the leg's far
        end from frame ``position`` on, as the synthetic ``source`` (ssrc, sequence,
        timestamp, timestamp step); None if it cannot (the leg then plays in Python)."""
        if not can_play(leg):
            return None
        thread = self._load.index(min(self._load))
        try:
            slot = self._forwarders[thread].play(_spec_alone(leg, self.transcodes), frames,
                                                 frame_length, position, source)
        except (OSError, OverflowError, ValueError):
            return None
        self._load[thread] += 1
        return Playback(slot, thread)

    def stop_playing(self, playback: Playback, leg: BridgedLeg) -> tuple[int, int, int, int]:
        """Stop the loop; the leg's stream and counters come back. Returns the next frame's
        position and the synthetic source's (ssrc, sequence, timestamp)."""
        position, source, outgoing, counters = \
            self._forwarders[playback.thread].stop_playing(playback.slot)
        self._load[playback.thread] -= playback.load
        leg.outgoing.restore_state(outgoing)
        leg.add_counters(counters)
        return position, *source

    def playback_counters(self, playback: Playback) -> tuple[int, ...]:
        counters: tuple[int, ...] = self._forwarders[playback.thread].counters(playback.slot)
        return counters

    def reception(self, offload: Offload, leg: BridgedLeg) -> ReceptionState:
        """``leg``'s reception statistics as they are now, the pair staying compiled."""
        slot = offload.slots[offload.legs.index(leg)]
        state: ReceptionState = self._forwarders[offload.thread].snapshot(slot)[2]
        return state

    def live_counters(self, offload: Offload, leg: BridgedLeg) -> tuple[int, ...]:
        slot = offload.slots[offload.legs.index(leg)]
        counters: tuple[int, ...] = self._forwarders[offload.thread].counters(slot)
        return counters

    def close(self) -> None:
        for forwarder in self._forwarders:
            forwarder.close()


def _spec_alone(leg: BridgedLeg, transcodes: frozenset[str]) -> tuple[object, ...]:
    """The forwarder's view of a leg it only sends to (a loop being played)."""
    stream, remote, reception = leg.stream, leg.remote, leg.reception
    assert stream is not None and remote is not None and reception is not None
    family = socket.AF_INET6 if ":" in remote[0] else socket.AF_INET
    return (leg.fileno(), int(family), remote[0], remote[1], stream.payload_type, -1,
            stream.codec.clock_rate, 0, _codec_id(stream.codec.key, transcodes), 0,
            reception.export_state(), leg.outgoing.export_state())


def _spec(leg: BridgedLeg, peer: BridgedLeg, transcodes: frozenset[str]
          ) -> tuple[object, ...]:
    """The forwarder's view of ``leg``: socket, far end, codec, stream and statistics."""
    stream, peer_stream, remote, reception = leg.stream, peer.stream, leg.remote, leg.reception
    assert stream is not None and peer_stream is not None
    assert remote is not None and reception is not None
    family = socket.AF_INET6 if ":" in remote[0] else socket.AF_INET
    dtmf = -1 if stream.dtmf_payload_type is None else stream.dtmf_payload_type
    return (leg.fileno(), int(family), remote[0], remote[1], stream.payload_type, dtmf,
            stream.codec.clock_rate, _conversion(peer_stream, stream),
            _codec_id(stream.codec.key, transcodes), stream.dtmf_clock_rate or 0,
            reception.export_state(), leg.outgoing.export_state())
