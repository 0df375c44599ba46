"""Offer/answer over a dialog's life: re-offers, hold both ways, o= versions, bad re-offers."""

from __future__ import annotations

import pytest

from warmline.media import sdp
from warmline.media.negotiation import Negotiation
from warmline.media.plane import LegAddress, LegCounters
from warmline.media.sdp import AudioStream, SdpError


class RecordingLeg:
    """Stands in for a relay leg: remembers every stream it was configured with."""

    def __init__(self) -> None:
        self.local = LegAddress("127.0.0.1", 40000)
        self.counters = LegCounters()
        self.streams: list[AudioStream] = []

    def configure(self, stream: AudioStream) -> None:
        self.streams.append(stream)

    def route_to(self, target: object) -> None: ...

    def play(self, player: object) -> object:
        return None

    def close(self) -> None: ...


def phone_offer(codecs: list[str], direction: str = "sendrecv", port: int = 5004,
                version: int = 1) -> bytes:
    return sdp.offer("127.0.0.5", port, codecs, session_id=77, version=version,
                     direction=direction)


def origin_version(text: bytes) -> int:
    origin = next(line for line in text.split(b"\r\n") if line.startswith(b"o="))
    return int(origin.split(b" ")[2])


def direction_of(text: bytes) -> str:
    marks = {"sendrecv", "sendonly", "recvonly", "inactive"}
    return next(line[2:] for line in text.decode().split("\r\n") if line[2:] in marks)


@pytest.fixture
def negotiation() -> tuple[Negotiation, RecordingLeg]:
    leg = RecordingLeg()
    return Negotiation(leg, "127.0.0.1", ["PCMU", "PCMA", "G722"]), leg


def test_the_phone_holds_and_resumes_and_versions_move_only_on_change(
        negotiation: tuple[Negotiation, RecordingLeg]) -> None:
    media, leg = negotiation
    first = media.answer(phone_offer(["PCMU"]))
    assert direction_of(first) == "sendrecv"
    again = media.answer(phone_offer(["PCMU"], version=2))  # a session refresh
    assert origin_version(again) == origin_version(first)
    held = media.answer(phone_offer(["PCMU"], "sendonly", version=3))
    assert direction_of(held) == "recvonly"
    assert origin_version(held) == origin_version(first) + 1
    assert leg.streams[-1].direction == "recvonly"  # the relay now sends them nothing
    resumed = media.answer(phone_offer(["PCMU"], version=4))
    assert direction_of(resumed) == "sendrecv"
    assert origin_version(resumed) == origin_version(first) + 2
    assert [s.direction for s in leg.streams] == ["sendrecv", "sendrecv", "recvonly", "sendrecv"]


def test_a_re_offer_keeps_the_codec_in_use_and_follows_a_new_address(
        negotiation: tuple[Negotiation, RecordingLeg]) -> None:
    media, leg = negotiation
    media.answer(phone_offer(["PCMA", "PCMU"]))
    assert leg.streams[-1].codec.name == "PCMA"
    media.answer(phone_offer(["PCMU", "PCMA"], port=6008))  # PCMU first now: PCMA stays
    assert leg.streams[-1].codec.name == "PCMA"
    assert leg.streams[-1].remote_port == 6008
    media.answer(phone_offer(["G722"]))  # PCMA withdrawn: move on to what is offered
    assert leg.streams[-1].codec.name == "G722"


def test_an_unusable_re_offer_is_refused_and_the_call_goes_on(
        negotiation: tuple[Negotiation, RecordingLeg]) -> None:
    media, leg = negotiation
    media.answer(phone_offer(["PCMU"]))
    with pytest.raises(SdpError) as refused:
        media.answer(phone_offer(["opus"]))
    assert refused.value.status == 488 and "no common codec" in refused.value.reason
    with pytest.raises(SdpError) as unreadable:
        media.answer(b"v=0\r\nthis is not sdp\r\n")
    assert unreadable.value.status == 400
    assert len(leg.streams) == 1 and media.stream is leg.streams[0]


def test_warmline_holds_the_far_end_and_resumes(
        negotiation: tuple[Negotiation, RecordingLeg]) -> None:
    media, leg = negotiation
    initial = media.offer()
    assert direction_of(initial) == "sendrecv"
    media.accept(sdp.answer(initial, "127.0.0.9", 7000, ["PCMU"], session_id=5, version=1)[0])
    hold = media.offer(hold=True)
    assert direction_of(hold) == "sendonly" and origin_version(hold) == origin_version(initial) + 1
    media.accept(sdp.answer(hold, "127.0.0.9", 7000, ["PCMU"], session_id=5, version=2)[0])
    assert leg.streams[-1].direction == "sendonly"  # we play hold audio, they send nothing
    # While we hold them, their own re-offer is answered narrowed by our hold.
    assert direction_of(media.answer(phone_offer(["PCMU"]))) == "sendonly"
    resume = media.offer(hold=False)
    assert direction_of(resume) == "sendrecv"
    assert resume.split(b"m=audio ")[1].startswith(b"40000 RTP/AVP 0 ")  # codec in use first
