"""Every attempt kind driven through unusual but legal orderings, with a fake clock, no sockets.

The far end hangs up at every step of each mode; a final NOTIFY arrives after
the BYE of the dialog it replaced; a 200 OK crosses the CANCEL sent at the
ring timeout; a second final NOTIFY follows success; responses arrive before
the requests they answer are acknowledged. Whatever the order, the caller
is never dropped and nothing is left ringing or connected by mistake.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.unit.fake_control import CALLER, SPEECH, FakeCallControl, kinds, start
from warmline.calls.call import CallState
from warmline.transfer.control import (
    CallerFacts,
    CallerHungUp,
    DigitPressed,
    LegAnswered,
    LegEnded,
    LegFailed,
    LegId,
    LegProgress,
    PlaybackEnded,
    ProbeAnswered,
    ReferAnswered,
    ReferNotified,
    SpeechReady,
    SpeechStarted,
    WebhookDone,
    WebhookKind,
)
from warmline.transfer.handoff import (
    Acceptance,
    ConnectBy,
    Destination,
    FallbackAction,
    FallbackKind,
    Handoff,
    HandoffStatus,
    TransferMode,
)

HUMAN = "sip:human@pbx.example"
QUEUE = "sip:queue@pbx.example"


def handoff(mode: TransferMode, final: bool = True, **options: object) -> Handoff:
    destination = Destination(HUMAN, mode, 20, **options)  # type: ignore[arg-type]
    return Handoff("call-1", destination, final=final, fallback=["ai"])


def ring(control: FakeCallControl) -> LegId:
    """The webhook is done; the human's INVITE goes out and rings. Returns the human's leg."""
    control.feed(WebhookDone(WebhookKind.WEBHOOK, False))
    leg: LegId = control.last("dial")[1]
    control.feed(LegProgress(leg, 180))
    return leg


def answered_and_whispering(control: FakeCallControl) -> LegId:
    human = ring(control)
    control.feed(SpeechReady("whisper", SPEECH), LegAnswered(human, 200))
    return human


# -- blind --------------------------------------------------------------------------------
def refer_of(control: FakeCallControl) -> int:
    return int(control.last("refer")[1])


def test_blind_succeeds_only_on_the_final_notify_and_ignores_a_second_one() -> None:
    record = handoff(TransferMode.BLIND)
    control, returned = start(record)
    refer = refer_of(control)
    control.feed(ReferAnswered(refer, 202), ReferNotified(refer, 100, False),
                 ReferNotified(refer, 180, False))
    assert record.status is HandoffStatus.RINGING and not control.did("hang_up")
    control.feed(ReferNotified(refer, 200, True))
    control.feed(ReferNotified(refer, 503, True), ReferNotified(refer, 200, True))
    assert record.status is HandoffStatus.COMPLETED and record.reason == "transferred (REFER)"
    assert control.did("hang_up") == [("hang_up", CALLER)]  # the AI's leg, once
    assert kinds(record).count("attempt_succeeded") == 1 and not returned


def test_blind_final_notify_before_the_202_still_completes() -> None:
    record = handoff(TransferMode.BLIND)
    control, _ = start(record)
    refer = refer_of(control)
    control.feed(ReferNotified(refer, 200, True), ReferAnswered(refer, 202))
    assert record.status is HandoffStatus.COMPLETED and record.sip_status == 200
    assert not control.timer_set("notify")


def test_blind_caller_hanging_up_before_the_202_fails_and_nothing_follows() -> None:
    record = handoff(TransferMode.BLIND)
    control, returned = start(record)
    refer = refer_of(control)
    control.feed(CallerHungUp(), ReferAnswered(refer, 202), ReferNotified(refer, 200, True))
    assert record.status is HandoffStatus.FAILED and record.reason == "caller hung up"
    assert not control.did("hang_up") and not returned and not control.did("dial")


@pytest.mark.parametrize("before_hangup", [["202"], ["202", "180"]])
def test_blind_final_notify_after_the_transferee_hung_up_still_completes(
        before_hangup: list[str]) -> None:
    """The transferee may end our call before reporting; its subscription outlives it."""
    record = handoff(TransferMode.BLIND)
    control, returned = start(record)
    refer = refer_of(control)
    steps = {"202": ReferAnswered(refer, 202), "180": ReferNotified(refer, 180, False)}
    control.feed(*(steps[name] for name in before_hangup), CallerHungUp())
    assert not record.ended  # not "caller hung up" yet: the report may be on its way
    control.feed(ReferNotified(refer, 200, True))
    assert record.status is HandoffStatus.COMPLETED and record.reason == "transferred (REFER)"
    assert not control.did("hang_up") and not returned  # the caller's side already left


def test_blind_transferee_hanging_up_with_no_report_fails_at_the_timeout() -> None:
    record = handoff(TransferMode.BLIND)
    control, returned = start(record)
    control.feed(ReferAnswered(refer_of(control), 202), CallerHungUp())
    control.advance(21.0)
    assert record.status is HandoffStatus.FAILED and record.reason == "caller hung up"
    assert not returned


def test_blind_without_a_subscription_succeeds_when_the_transferee_hangs_up() -> None:
    """RFC 4488: a 202 with Refer-Sub: false means no NOTIFY will tell the outcome."""
    record = handoff(TransferMode.BLIND)
    control, returned = start(record)
    control.feed(ReferAnswered(refer_of(control), 202, subscribed=False), CallerHungUp())
    assert record.status is HandoffStatus.COMPLETED and "Refer-Sub false" in str(record.reason)
    assert not control.did("hang_up") and not returned


def test_blind_without_a_subscription_and_no_hang_up_falls_back() -> None:
    record = handoff(TransferMode.BLIND)
    control, returned = start(record)
    control.feed(ReferAnswered(refer_of(control), 202, subscribed=False))
    control.advance(21.0)
    assert record.status is HandoffStatus.FAILED and returned


def test_blind_refused_refer_becomes_a_bridge_to_the_same_place() -> None:
    record = handoff(TransferMode.BLIND)
    control, _ = start(record)
    control.feed(ReferAnswered(refer_of(control), 403))
    assert control.last("webhook") == ("webhook", WebhookKind.WEBHOOK)
    human = ring(control)
    assert control.last("dial")[2] == HUMAN
    control.feed(LegAnswered(human, 200))
    assert control.last("bridge") == ("bridge", CALLER, human)
    assert record.status is HandoffStatus.CONNECTED and control.state is CallState.HUMAN


def test_blind_to_a_caller_that_does_not_allow_refer_is_bridged_without_a_refer() -> None:
    facts = CallerFacts(False, False, "sip:c@x", "<sip:c@x>", None, "sip:ai@x")
    record = handoff(TransferMode.BLIND)
    control, _ = start(record, FakeCallControl(caller_facts=facts))
    assert not control.did("refer") and control.did("webhook")
    assert "REFER refused (405)" in str(record.events[-2].detail)


def test_blind_silent_transferee_times_out_and_the_caller_returns_to_the_ai() -> None:
    record = handoff(TransferMode.BLIND)
    control, returned = start(record)
    control.feed(ReferAnswered(refer_of(control), 202))
    control.advance(20.5)
    assert record.status is HandoffStatus.FAILED and record.sip_status == 408
    assert returned == [("no final NOTIFY within 20 s", 0.0)]
    assert control.last("detach") == ("detach", CALLER) and control.state is CallState.AI


# -- bridge -------------------------------------------------------------------------------
def test_a_200_crossing_the_cancel_at_the_ring_timeout_is_never_connected() -> None:
    record = Handoff("call-1", Destination(HUMAN, TransferMode.BRIDGE, 5),
                     fallback=[Destination(QUEUE, TransferMode.BRIDGE, 5)])
    control, _ = start(record)
    human = ring(control)
    control.advance(5.0)
    assert control.did("cancel") == [("cancel", human)]
    control.feed(LegAnswered(human, 200))  # the 200 crossed our CANCEL on the wire
    control.feed(LegFailed(human, 487, "Request Terminated"))
    assert not control.did("bridge") and "connected" not in kinds(record)
    assert kinds(record).count("attempt_failed") == 1
    queue = ring(control)  # the fallback rings meanwhile
    assert control.last("dial")[2] == QUEUE and queue != human


def test_the_answer_just_before_the_ring_timeout_wins() -> None:
    record = handoff(TransferMode.BRIDGE)
    control, _ = start(record)
    human = ring(control)
    control.advance(19.9)
    control.feed(LegAnswered(human, 200))
    control.advance(5.0)  # the ring timer was cancelled with the answer
    assert not control.did("cancel") and control.last("bridge") == ("bridge", CALLER, human)


def test_a_late_provisional_after_the_answer_changes_nothing() -> None:
    record = handoff(TransferMode.BRIDGE)
    control, _ = start(record)
    human = ring(control)
    control.feed(LegAnswered(human, 200), LegProgress(human, 180))
    assert record.status is HandoffStatus.CONNECTED


BRIDGE_STEPS = ["webhook", "ringing", "connected"]


@pytest.mark.parametrize("step", BRIDGE_STEPS)
def test_bridge_caller_hanging_up_at_every_step(step: str) -> None:
    record = handoff(TransferMode.BRIDGE)
    control, returned = start(record)
    human = None
    if step != "webhook":
        human = ring(control)
    if step == "connected":
        control.feed(LegAnswered(human, 200))  # type: ignore[arg-type]
    control.feed(CallerHungUp())
    control.feed(WebhookDone(WebhookKind.WEBHOOK, True))  # a late webhook rings nobody
    assert not returned
    if step == "webhook":
        assert not control.did("dial") and record.reason == "caller hung up"
    elif step == "ringing":
        assert control.did("hang_up") == [("hang_up", human)]  # CANCELs the ringing phone
        assert record.status is HandoffStatus.FAILED
    else:
        assert control.did("hang_up") == [("hang_up", human)]
        assert record.reason == "the caller hung up after the connection"


@pytest.mark.parametrize("final", [True, False])
def test_bridge_human_hanging_up_after_the_connection(final: bool) -> None:
    record = handoff(TransferMode.BRIDGE, final=final)
    control, returned = start(record)
    human = ring(control)
    control.feed(LegAnswered(human, 200), SpeechStarted(human), LegEnded(human))
    assert "human_first_word" in kinds(record)
    if final:
        assert record.reason == "the human hung up"
        assert ("hang_up", CALLER) in control.actions and not returned
    else:
        assert record.reason == "back to the AI: the human hung up"
        assert returned and returned[0][0] == "the human hung up"
        assert control.state is CallState.AI and ("hang_up", CALLER) not in control.actions


def test_an_unavailable_probe_skips_the_destination_without_ringing_it() -> None:
    record = Handoff("call-1", Destination(HUMAN, TransferMode.BRIDGE, 5, probe=True),
                     fallback=[FallbackAction(FallbackKind.CALLBACK, delay_seconds=60)])
    control, _ = start(record)
    control.feed(ProbeAnswered(HUMAN, 408))
    assert not control.did("dial") and control.did("callback")
    assert record.reason == "callback scheduled" and "probed" in kinds(record)


def test_a_destination_that_keeps_challenging_fails_as_an_authentication_failure() -> None:
    record = handoff(TransferMode.BRIDGE)
    control, returned = start(record)
    human = ring(control)
    control.feed(LegFailed(human, 407, "Proxy Authentication Required"))
    assert record.reason == "authentication failed: 407 Proxy Authentication Required"
    assert returned and record.sip_status == 407


def test_an_unusable_answer_hangs_the_human_up_and_falls_back() -> None:
    record = handoff(TransferMode.BRIDGE)
    control, returned = start(record)
    human = ring(control)
    control.feed(LegAnswered(human, 200, problem="no common codec"))
    assert ("hang_up", human) in control.actions and not control.did("bridge")
    assert record.sip_status == 488 and returned


# -- warm ---------------------------------------------------------------------------------
WARM_STEPS = ["ringing", "preparing", "whispering", "accepting", "bridged"]


def drive_warm(control: FakeCallControl, step: str) -> LegId:
    """Drive a warm attempt (DTMF acceptance) to ``step``; returns the human's leg."""
    human = ring(control)
    if step == "ringing":
        return human
    control.feed(LegAnswered(human, 200))
    if step == "preparing":
        return human  # TTS not ready yet
    control.feed(SpeechReady("whisper", SPEECH))
    if step == "whispering":
        return human
    control.feed(PlaybackEnded(control.last("play")[2]))
    if step == "accepting":
        return human
    control.feed(DigitPressed(human, "1"))
    return human


@pytest.mark.parametrize("step", WARM_STEPS)
def test_warm_human_hanging_up_at_every_step(step: str) -> None:
    record = handoff(TransferMode.WARM, accept=Acceptance.DTMF)
    control, returned = start(record)
    human = drive_warm(control, step)
    if step == "ringing":
        control.feed(LegFailed(human, 603, "Decline"))
    else:
        control.feed(LegEnded(human))
    expected = {"ringing": "declined: 603 Decline",
                "preparing": "the human hung up during the consultation",
                "whispering": "the human hung up during the whisper",
                "accepting": "the human hung up during the consultation",
                "bridged": "the human hung up"}[step]
    assert record.reason == expected
    if step == "bridged":
        assert not returned
    else:
        assert record.status is HandoffStatus.FAILED and returned == [(expected, 0.0)]
        assert control.state is CallState.AI and not control.did("bridge")
    assert not control.timer_set("accept") and not control.timer_set("ring")


@pytest.mark.parametrize("step", WARM_STEPS)
def test_warm_caller_hanging_up_at_every_step(step: str) -> None:
    record = handoff(TransferMode.WARM, accept=Acceptance.DTMF)
    control, returned = start(record)
    human = drive_warm(control, step)
    control.feed(CallerHungUp())
    assert not returned and ("hang_up", human) in control.actions
    if step == "bridged":
        assert record.reason == "the caller hung up after the connection"
    else:
        assert record.status is HandoffStatus.FAILED and record.reason == "caller hung up"
        control.feed(DigitPressed(human, "1"))  # too late to accept anything
        assert not control.did("bridge")


def test_warm_whisper_not_ready_in_time_goes_on_without_it() -> None:
    record = handoff(TransferMode.WARM)
    control, _ = start(record)
    human = ring(control)
    control.feed(LegAnswered(human, 200))
    control.advance(5.0)
    control.feed(SpeechReady("whisper", SPEECH))  # too late: not played any more
    assert "whisper_unavailable" in kinds(record) and not control.did("play")
    assert control.last("bridge") == ("bridge", CALLER, human)


@pytest.mark.parametrize(("answer", "connected"), [("1", True), ("9", False), (None, False)])
def test_warm_acceptance_by_dtmf(answer: str | None, connected: bool) -> None:
    record = handoff(TransferMode.WARM, accept=Acceptance.DTMF, accept_timeout=8)
    control, returned = start(record)
    human = drive_warm(control, "accepting")
    assert ("watch_digits", human, True) in control.actions
    if answer is None:
        control.advance(8.0)
    else:
        control.feed(DigitPressed(human, answer))
    assert bool(control.did("bridge")) is connected
    if not connected:
        assert ("hang_up", human) in control.actions and returned
        assert ("watch_digits", human, False) in control.actions


def test_warm_replaces_final_notify_after_the_replaced_dialog_ended() -> None:
    record = handoff(TransferMode.WARM, connect=ConnectBy.REPLACES)
    control, _ = start(record)
    human = drive_warm(control, "accepting")  # no acceptance asked: replacing now
    refer = refer_of(control)
    assert control.last("refer")[3] == (f"sip:human@pbx?Replaces=consult-{human}"
                                        f"&X-Warmline-Handoff={record.id}")
    assert record.status is HandoffStatus.REPLACING
    control.feed(ReferAnswered(refer, 202), ReferNotified(refer, 100, False))
    control.feed(LegEnded(human))  # the human's phone ends the dialog it replaced
    assert record.status is HandoffStatus.REPLACING and not control.did("bridge")
    control.feed(ReferNotified(refer, 200, True))
    assert record.status is HandoffStatus.COMPLETED
    assert record.reason == "connected by REFER with Replaces"
    assert control.did("hang_up") == [("hang_up", CALLER)]  # the consult is over already
    assert not control.timer_set("consult-bye")


def test_warm_replaces_that_fails_after_the_consult_ended_falls_back() -> None:
    record = Handoff("call-1", Destination(HUMAN, TransferMode.WARM, 20,
                                           connect=ConnectBy.REPLACES),
                     fallback=[FallbackAction(FallbackKind.VOICEMAIL)])
    control, _ = start(record)
    human = drive_warm(control, "accepting")
    refer = refer_of(control)
    control.feed(LegEnded(human), ReferNotified(refer, 480, True))
    assert not control.did("bridge") and ("record", CALLER) not in control.actions
    assert "voicemail_started" in kinds(record)
    assert "the human's line has ended" in str(record.events)


def test_warm_replaces_refused_bridges_the_consultation_instead() -> None:
    record = handoff(TransferMode.WARM, connect=ConnectBy.REPLACES)
    control, _ = start(record)
    human = drive_warm(control, "accepting")
    control.feed(ReferAnswered(refer_of(control), 501))
    assert "replaces_failed" in kinds(record)
    assert control.last("bridge") == ("bridge", CALLER, human)


def test_warm_replaces_caller_hanging_up_before_its_final_notify_still_completes() -> None:
    """The caller's phone may hang up on us once the human answered its INVITE with
    Replaces, then report; the human's phone ends the replaced dialog meanwhile."""
    record = handoff(TransferMode.WARM, connect=ConnectBy.REPLACES)
    control, returned = start(record)
    human = drive_warm(control, "accepting")
    refer = refer_of(control)
    control.feed(ReferAnswered(refer, 202), CallerHungUp(), LegEnded(human))
    assert record.status is HandoffStatus.REPLACING and not control.did("bridge")
    control.feed(ReferNotified(refer, 200, True))
    assert record.status is HandoffStatus.COMPLETED and not control.did("hang_up")
    assert not returned


def test_warm_replaces_success_makes_sure_the_consult_ends() -> None:
    record = handoff(TransferMode.WARM, connect=ConnectBy.REPLACES)
    control, _ = start(record)
    human = drive_warm(control, "accepting")
    control.feed(ReferNotified(refer_of(control), 200, True))
    control.advance(1.0)  # the human's phone did not BYE the replaced dialog
    assert control.did("hang_up") == [("hang_up", CALLER), ("hang_up", human)]


def test_warm_replaces_unsupported_by_the_caller_bridges() -> None:
    facts = CallerFacts(True, False, "sip:c@x", "<sip:c@x>", None, "sip:ai@x")
    record = handoff(TransferMode.WARM, connect=ConnectBy.REPLACES)
    control, _ = start(record, FakeCallControl(caller_facts=facts))
    human = drive_warm(control, "accepting")
    assert "replaces_unsupported" in kinds(record) and not control.did("refer")
    assert control.last("bridge") == ("bridge", CALLER, human)


# -- attended -----------------------------------------------------------------------------
def drive_attended(control: FakeCallControl, step: str) -> LegId:
    human = ring(control)
    if step == "ringing":
        return human
    control.feed(SpeechReady("introduction", SPEECH), LegAnswered(human, 200))
    if step == "introducing":
        return human
    control.feed(PlaybackEnded(control.last("three_way")[3]))
    return human


@pytest.mark.parametrize("step", ["ringing", "introducing", "bridged"])
@pytest.mark.parametrize("who", ["caller", "human"])
def test_attended_either_side_hanging_up_at_every_step(step: str, who: str) -> None:
    record = handoff(TransferMode.ATTENDED)
    control, returned = start(record)
    human = drive_attended(control, step)
    if step != "ringing":
        assert control.last("three_way")[1:3] == (CALLER, human)
    if who == "caller":
        control.feed(CallerHungUp())
        assert not returned and ("hang_up", human) in control.actions
    elif step == "ringing":
        control.feed(LegFailed(human, 486, "Busy Here"))
        assert record.reason == "busy: 486 Busy Here" and returned
    else:
        control.feed(LegEnded(human))
        if step == "introducing":
            assert record.reason == "the human hung up during the introduction"
            assert not control.did("bridge") and returned
        else:
            assert record.reason == "the human hung up"


def test_attended_without_an_introduction_bridges_at_once() -> None:
    record = handoff(TransferMode.ATTENDED)
    control, _ = start(record)
    human = ring(control)
    control.feed(SpeechReady("introduction", None, "espeak-ng missing"),
                 LegAnswered(human, 200))
    assert control.last("three_way")[3] is None and "introduced" in kinds(record)
    assert control.last("bridge") == ("bridge", CALLER, human)


# -- the chain ----------------------------------------------------------------------------
def test_announcement_then_caller_gone_runs_nothing() -> None:
    record = Handoff("call-1", Destination(HUMAN, TransferMode.BRIDGE, 5),
                     announce="Connecting you to billing.")
    control, _ = start(record)
    assert control.last("synthesize")[1] == "announce"
    control.feed(SpeechReady("announce", SPEECH))
    control.feed(CallerHungUp())
    assert record.reason == "caller hung up" and not control.did("webhook")


def test_voicemail_when_the_caller_hangs_up_during_the_prompt_saves_nothing_heard() -> None:
    record = Handoff("call-1", None, fallback=[FallbackAction(FallbackKind.VOICEMAIL)])
    control, _ = start(record)
    control.feed(CallerHungUp())
    control.feed(SpeechReady("voicemail-prompt", SPEECH))  # the prompt arrives too late
    assert record.reason == "voicemail recorded" and not control.did("play")
    assert control.did("save_recording") and not control.did("hang_up")


def test_voicemail_records_until_the_limit_then_thanks_and_hangs_up() -> None:
    record = Handoff("call-1", None,
                     fallback=[FallbackAction(FallbackKind.VOICEMAIL, max_seconds=30)])
    control, _ = start(record)
    control.feed(SpeechReady("voicemail-prompt", SPEECH))
    control.feed(PlaybackEnded(control.last("play")[2]))
    assert ("record", CALLER) in control.actions
    control.advance(30.0)
    control.feed(SpeechReady("voicemail-thanks", SPEECH))
    control.feed(PlaybackEnded(control.last("play")[2]))
    assert control.did("hang_up") == [("hang_up", CALLER)]
    assert kinds(record)[-2:] == ["voicemail_saved", "completed"]


def test_a_ticket_then_the_return_announcement_then_back_to_the_ai() -> None:
    record = Handoff("call-1", None, fallback=[FallbackAction(FallbackKind.TICKET)])
    control, returned = start(record, announcement="Back with you.")
    control.feed(WebhookDone(WebhookKind.TICKET, True))
    assert record.reason == "ticket opened" and not returned
    control.feed(SpeechReady("return", SPEECH))
    control.feed(PlaybackEnded(control.last("play")[2]))
    assert returned == [("ticket opened", 0.0)] and control.state is CallState.AI


EVERY_MODE: list[Callable[[], Handoff]] = [
    lambda: handoff(TransferMode.BLIND), lambda: handoff(TransferMode.BRIDGE),
    lambda: handoff(TransferMode.WARM), lambda: handoff(TransferMode.ATTENDED),
    lambda: Handoff("call-1", Destination("ws://127.0.0.1:9/bot", TransferMode.AGENT, 20))]


@pytest.mark.parametrize("make", EVERY_MODE)
def test_every_mode_holds_the_caller_with_audio_from_the_start(make: Callable[[], Handoff]
                                                               ) -> None:
    control, _ = start(make())
    assert control.actions[0] in (("hold", CALLER), ("ringback", CALLER))
    assert control.state is CallState.TRANSFERRING
