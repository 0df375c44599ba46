"""Looped audio shared by every call on hold is encoded once per frame, not once per call."""

from __future__ import annotations

import numpy as np

from warmline.media.codecs import make_codec
from warmline.media.player import Player, ringback
from warmline.media.relay_leg import _EncodedLoops


class CountingCodec:
    """PCMU that counts its encodes (so a reused frame shows)."""

    def __init__(self) -> None:
        self.inner = make_codec("pcmu")
        self.encoded = 0

    def encode(self, samples: np.ndarray) -> bytes:
        self.encoded += 1
        return self.inner.encode(samples)

    def decode(self, payload: bytes) -> np.ndarray:
        return self.inner.decode(payload)


def test_every_caller_on_hold_gets_the_same_bytes_from_one_encoding() -> None:
    cache = _EncodedLoops()
    hold = ringback()
    pcmu = make_codec("pcmu")
    callers = [Player(hold, loop=True) for _ in range(3)]
    heard = [[cache.payload(player, pcmu) for _ in range(400)] for player in callers]
    reference = Player(hold, loop=True)
    expected = [pcmu.encode(reference.next_frame()) for _ in range(400)]  # wraps past 300
    assert heard[0] == heard[1] == heard[2] == expected


def test_only_stateless_codecs_and_looped_players_are_reused() -> None:
    cache = _EncodedLoops()
    speech = np.arange(1600, dtype=np.int16)
    counting = CountingCodec()  # not known to be stateless: encoded every time
    for _ in range(2):
        cache.payload(Player(speech, loop=True), counting)
    assert counting.encoded == 2
    g722 = make_codec("g722")  # keeps state between frames: never shared
    first = [cache.payload(Player(speech, loop=True), g722) for _ in range(2)]
    assert len(first) == 2 and cache._by_buffer == {}
    one_shot = Player(speech)  # a prompt played once: nothing kept
    cache.payload(one_shot, make_codec("pcmu"))
    assert cache._by_buffer == {}


def test_the_cache_holds_a_bounded_number_of_buffers() -> None:
    cache = _EncodedLoops()
    pcmu = make_codec("pcmu")
    for n in range(cache.MAX_BUFFERS + 5):
        cache.payload(Player(np.full(320, n, dtype=np.int16), loop=True), pcmu)
    assert len(cache._by_buffer) == cache.MAX_BUFFERS


def test_one_clock_ticks_every_feed_and_stops_when_nobody_plays() -> None:
    import asyncio

    from warmline.media.relay_leg import MediaClock

    async def scenario() -> tuple[list[int], bool, bool]:
        clock = MediaClock.of(asyncio.get_running_loop())
        assert MediaClock.of(asyncio.get_running_loop()) is clock
        ticks = [0, 0]

        def first() -> None:
            ticks[0] += 1
            if ticks[0] == 3:
                clock.leave(2)  # leaving during a tick: not ticked again, even this round

        clock.join(1, first)
        clock.join(2, lambda: ticks.__setitem__(1, ticks[1] + 1))
        await asyncio.sleep(0.105)  # about five ticks
        running_with_one = clock._pacer.running
        clock.leave(1)
        return ticks, running_with_one, clock._pacer.running

    ticks, running, after = asyncio.run(scenario())
    # the first tick comes a frame after the first join (a feed sends its first packet
    # itself): both were ticked twice, and the second left during the third
    assert ticks[0] >= 4 and ticks[1] == 2, ticks
    assert running and not after
