"""Simultaneous ring: a group rung at once, the first answer wins, the others told why."""

from __future__ import annotations

from tests.unit.fake_control import SPEECH, FakeCallControl, kinds, start
from warmline.calls.call import CallState
from warmline.transfer.control import (
    LegAnswered,
    LegFailed,
    LegId,
    LegProgress,
    SpeechReady,
    WebhookDone,
    WebhookKind,
)
from warmline.transfer.dialing import COMPLETED_ELSEWHERE
from warmline.transfer.handoff import Destination, Handoff, HandoffError, HandoffStatus
from warmline.transfer.handoff import TransferMode as Mode

ON_CALL = ("sip:ana@pbx.example", "sip:ben@pbx.example", "sip:chen@pbx.example")


def group_handoff(mode: Mode = Mode.BRIDGE, timeout: float = 120) -> Handoff:
    first, *others = ON_CALL
    return Handoff("call-1", Destination(first, mode, timeout, ring_with=tuple(others)),
                   fallback=["ai"])


def ring_all(control: FakeCallControl) -> dict[str, LegId]:
    control.feed(WebhookDone(WebhookKind.WEBHOOK, False))
    legs = {action[2]: action[1] for action in control.did("dial")}
    for leg in legs.values():
        control.feed(LegProgress(leg, 180))
    return legs


def test_every_member_rings_and_the_first_to_answer_takes_the_call() -> None:
    record = group_handoff()
    control, returned = start(record)
    legs = ring_all(control)
    assert sorted(legs) == sorted(ON_CALL)  # one INVITE each, at once
    control.feed(LegAnswered(legs["sip:ben@pbx.example"], 200))
    cancelled = {action[1] for action in control.did("cancel")}
    assert cancelled == {legs["sip:ana@pbx.example"], legs["sip:chen@pbx.example"]}
    assert all(control.cancel_reasons[leg] == COMPLETED_ELSEWHERE for leg in cancelled)
    # a second answer crossing its CANCEL does not take the call from Ben
    control.feed(LegAnswered(legs["sip:ana@pbx.example"], 200))
    assert record.status is HandoffStatus.CONNECTED and control.state is CallState.HUMAN
    answered = next(event for event in record.events if event.kind == "answered")
    assert answered.detail["by"] == "sip:ben@pbx.example"
    assert control.last("bridge")[2] == legs["sip:ben@pbx.example"]  # bridged to Ben
    assert returned == []
    assert kinds(record).count("ringing") == 1  # three phones rang: one ringing step


def test_the_group_fails_only_when_everyone_has_and_busy_says_most() -> None:
    record = group_handoff()
    control, returned = start(record)
    legs = ring_all(control)
    control.feed(LegFailed(legs["sip:ana@pbx.example"], 486, "Busy Here"))
    assert record.status is HandoffStatus.RINGING  # the others still ring
    control.feed(LegFailed(legs["sip:ben@pbx.example"], 480, "Temporarily Unavailable"),
                 LegFailed(legs["sip:chen@pbx.example"], 603, "Decline"))
    assert record.status is HandoffStatus.FAILED and record.reason == "busy: 486 Busy Here"
    assert returned == [("busy: 486 Busy Here", 0.0)]  # back to the AI, as the chain said
    assert kinds(record).count("ring_failed") == 2


def test_the_ring_timeout_cancels_everyone_still_ringing() -> None:
    record = group_handoff(timeout=120)
    control, _ = start(record)
    legs = ring_all(control)
    control.feed(LegFailed(legs["sip:chen@pbx.example"], 404, "Not Found"))
    control.advance(121)
    cancelled = [action[1] for action in control.did("cancel")]
    assert sorted(cancelled) == sorted([legs["sip:ana@pbx.example"],
                                        legs["sip:ben@pbx.example"]])
    assert any("no answer within 120 s" in str(event.detail) for event in record.events)


def test_a_warm_transfer_whispers_to_the_one_who_answered() -> None:
    record = group_handoff(Mode.WARM)
    control, _ = start(record)
    legs = ring_all(control)
    chen = legs["sip:chen@pbx.example"]
    control.feed(SpeechReady("whisper", SPEECH), LegAnswered(chen, 200))
    played_to = [action[1] for action in control.did("play")]
    assert chen in played_to and legs["sip:ana@pbx.example"] not in played_to


def test_a_group_naming_one_uri_twice_is_refused() -> None:
    try:
        Destination("sip:a@x", Mode.BRIDGE, 30, ring_with=("sip:a@x",)).validate()
    except HandoffError as error:
        assert "twice" in str(error)
    else:
        raise AssertionError("a duplicate URI in a group was accepted")


def test_a_group_is_for_modes_that_keep_the_media_and_is_never_probed() -> None:
    for options, named in (({"mode": Mode.BLIND}, "ring_with needs mode"),
                           ({"mode": Mode.BRIDGE, "probe": True}, "probe is for one")):
        try:
            Destination("sip:a@x", timeout=30, ring_with=("sip:b@x",),
                        **options).validate()  # type: ignore[arg-type]
        except HandoffError as error:
            assert named in str(error)
        else:
            raise AssertionError(f"{options} with a group was accepted")


def test_one_member_answering_with_unusable_sdp_leaves_the_others_ringing() -> None:
    record = group_handoff()
    control, _ = start(record)
    legs = ring_all(control)
    control.feed(LegAnswered(legs["sip:ana@pbx.example"], 200, problem="no common codec"))
    assert ("hang_up", legs["sip:ana@pbx.example"]) in control.actions
    assert record.status is HandoffStatus.RINGING  # Ben and Chen still ring
    control.feed(LegAnswered(legs["sip:ben@pbx.example"], 200))
    assert record.status is HandoffStatus.CONNECTED
