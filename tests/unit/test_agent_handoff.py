"""Handing a call to another AI agent: every ordering, with a fake control and no sockets."""

from __future__ import annotations

import json

import pytest

from tests.unit.fake_control import CALLER, FakeCallControl, kinds, start
from warmline.calls.call import CallState
from warmline.records.kpis import compute
from warmline.records.store import Event
from warmline.transfer.agent import (
    MAX_PARAMETERS_BYTES,
    SETTLE_SECONDS,
    agent_parameters,
)
from warmline.transfer.control import (
    AgentConnected,
    AgentEnded,
    AgentFailed,
    AgentId,
    CallerHungUp,
    LegAnswered,
    WebhookDone,
    WebhookKind,
)
from warmline.transfer.handoff import (
    Destination,
    Handoff,
    HandoffError,
    HandoffStatus,
    TransferMode,
    destination_uri_problem,
)
from warmline.transfer.policy import DestinationPolicy

BOT = "ws://127.0.0.1:9000/bot-b"


def _handoff(final: bool = False, fallback: list[Destination | str] | None = None,
             uri: str = BOT) -> Handoff:
    return Handoff("call-1", Destination(uri, TransferMode.AGENT, 5.0), final=final,
                   fallback=list(fallback or []), context={"summary": "wants a refund"})


def _connecting(handoff: Handoff) -> tuple[FakeCallControl, list[tuple[str, float]], AgentId]:
    control, returned = start(handoff)
    _, agent, target, parameters = control.last("connect_agent")
    assert target == BOT and parameters["handoff_id"] == handoff.id
    assert control.did("hold") == [("hold", CALLER)]  # no dead air while it connects
    assert control.state is CallState.TRANSFERRING
    return control, returned, agent


def test_connected_and_settled_then_handed_back_returns_to_the_first_agent() -> None:
    handoff = _handoff(final=False)
    control, returned, agent = _connecting(handoff)
    control.feed(AgentConnected(agent))
    assert control.state is CallState.AI and handoff.status is HandoffStatus.CONNECTED
    control.advance(SETTLE_SECONDS + 0.1)
    assert "attempt_succeeded" in kinds(handoff) and not handoff.ended
    control.feed(AgentEnded(agent, handed_back=True, report="balance told: 42 EUR"))
    assert [why for why, _ in returned] == ["the agent handed the caller back"]
    assert handoff.agent_report == "balance told: 42 EUR"
    assert handoff.status is HandoffStatus.COMPLETED and control.state is CallState.AI
    assert kinds(handoff)[-3:] == ["agent_ended", "returned_to_ai", "completed"]
    assert not control.did("hang_up") and not control.did("disconnect_agent")


def test_final_agent_ending_its_part_ends_the_call() -> None:
    handoff = _handoff(final=True)
    control, returned, agent = _connecting(handoff)
    control.feed(AgentConnected(agent))
    control.advance(SETTLE_SECONDS + 0.1)
    control.feed(AgentEnded(agent, handed_back=True))
    assert not returned and control.did("hang_up") == [("hang_up", CALLER)]
    assert handoff.reason == "the agent ended the call"


@pytest.mark.parametrize("final", [True, False])
def test_an_agent_dropping_after_settling_sends_the_caller_back_either_way(final: bool
                                                                          ) -> None:
    handoff = _handoff(final=final)
    control, returned, agent = _connecting(handoff)
    control.feed(AgentConnected(agent))
    control.advance(SETTLE_SECONDS + 0.1)
    control.feed(AgentEnded(agent, handed_back=False))
    assert [why for why, _ in returned] == ["the agent dropped"] and not control.did("hang_up")


def test_connect_failure_falls_back_to_the_next_destination() -> None:
    handoff = _handoff(fallback=[Destination("sip:human@pbx", TransferMode.BRIDGE, 20)])
    control, returned, agent = _connecting(handoff)
    control.feed(AgentFailed(agent, "connection refused"))
    assert handoff.reason == "agent unreachable: connection refused"
    control.feed(WebhookDone(WebhookKind.WEBHOOK, True))  # the human's desk has the packet
    _, leg, uri, *_ = control.last("dial")
    assert uri == "sip:human@pbx" and not returned
    control.feed(LegAnswered(leg, 200))
    assert control.last("bridge") == ("bridge", CALLER, leg)


def test_connect_failure_with_no_fallback_returns_to_the_first_agent() -> None:
    handoff = _handoff()
    control, returned, agent = _connecting(handoff)
    control.feed(AgentFailed(agent, "HTTP 404"))
    assert handoff.status is HandoffStatus.FAILED and len(returned) == 1
    assert "attempt_failed" in kinds(handoff) and control.state is CallState.AI


def test_no_connection_within_the_timeout_fails_and_lets_the_socket_go() -> None:
    handoff = _handoff()
    control, returned, agent = _connecting(handoff)
    control.advance(5.1)
    assert control.did("disconnect_agent") == [("disconnect_agent", agent)]
    assert handoff.reason == "agent not connected within 5 s" and len(returned) == 1
    control.feed(AgentConnected(agent))  # too late: the run is over, nothing changes
    assert control.state is CallState.AI and handoff.status is HandoffStatus.FAILED


def test_a_drop_in_the_first_seconds_fails_the_handoff_and_falls_back() -> None:
    handoff = _handoff(fallback=["voicemail"])
    control, returned, agent = _connecting(handoff)
    control.feed(AgentConnected(agent))
    control.advance(1.0)
    control.feed(AgentEnded(agent, handed_back=False))
    assert "attempt_failed" in kinds(handoff) and "attempt_succeeded" not in kinds(handoff)
    assert control.state is CallState.TRANSFERRING  # voicemail next, not the AI
    assert control.last("synthesize")[1] == "voicemail-prompt" and not returned
    assert not control.did("disconnect_agent")  # its stream is over already


def test_caller_hanging_up_while_connecting_lets_the_agent_go() -> None:
    handoff = _handoff()
    control, returned, agent = _connecting(handoff)
    control.feed(CallerHungUp())
    assert control.did("disconnect_agent") == [("disconnect_agent", agent)]
    assert handoff.status is HandoffStatus.FAILED and handoff.reason == "caller hung up"
    assert not returned
    control.feed(AgentConnected(agent))
    assert handoff.status is HandoffStatus.FAILED


def test_caller_hanging_up_while_with_the_agent_completes_the_handoff() -> None:
    handoff = _handoff(final=True)
    control, returned, agent = _connecting(handoff)
    control.feed(AgentConnected(agent))
    control.advance(SETTLE_SECONDS + 0.1)
    control.feed(CallerHungUp())
    assert handoff.status is HandoffStatus.COMPLETED and not returned
    assert control.did("disconnect_agent") == [("disconnect_agent", agent)]


def test_the_parameters_carry_the_context_bounded() -> None:
    handoff = _handoff(final=False)
    handoff.packet = {"summary": "Maria, billing dispute", "intent": {"name": "billing"},
                      "sentiment": {"level": "frustrated"},
                      "actions": [{"name": "refund_lookup", "result": "failed"}],
                      "transcript": [{"speaker": "caller", "text": f"line {n} " + '"' * 400}
                                     for n in range(200)]}
    parameters = agent_parameters(handoff)
    assert all(isinstance(value, str) for value in parameters.values())
    assert len(json.dumps(parameters).encode()) <= MAX_PARAMETERS_BYTES
    assert parameters["final"] == "false" and parameters["handoff_token"] == handoff.token
    assert parameters["intent"] == "billing" and parameters["sentiment"] == "frustrated"
    assert json.loads(parameters["actions_tried"]) == ["refund_lookup"]
    lines = json.loads(parameters["transcript"])  # quotes double in JSON: cut to fit
    assert 0 < len(lines) < 20 and lines[-1]["text"].startswith("line 199 ")  # the latest


@pytest.mark.parametrize(("uri", "problem"), [
    ("ws://127.0.0.1:9000/bot", None), ("wss://bots.example/b", None), ("agent:billing", None),
    ("ws:/nohost", "ws://HOST"), ("ws://u:p@host/x", "credentials"), ("agent:", "agent:NAME"),
    ("agent:a b", "agent:NAME"), ("ws://host:99999/", "bad port")])
def test_agent_destinations_are_checked(uri: str, problem: str | None) -> None:
    found = destination_uri_problem(uri)
    assert found is None if problem is None else (found is not None and problem in found)


def test_an_agent_needs_mode_agent_and_mode_agent_needs_an_agent() -> None:
    with pytest.raises(HandoffError, match=r"to: .*needs mode agent"):
        Destination(BOT, TransferMode.BRIDGE, 5).validate()
    with pytest.raises(HandoffError, match="to: mode agent needs"):
        Destination("sip:a@b", TransferMode.AGENT, 5).validate()
    with pytest.raises(HandoffError, match="ring_with rings SIP"):
        Destination("sip:a@b", TransferMode.BRIDGE, 5, ring_with=(BOT,)).validate()


def test_a_requested_agent_url_must_be_trusted_or_named_in_the_config() -> None:
    policy = DestinationPolicy()
    assert policy.problem("ws://127.0.0.1:9/b") is None
    assert policy.problem("agent:billing") is None
    refused = policy.problem("wss://evil.example/steal")
    assert refused is not None and "[agents.NAME]" in refused


def test_kpis_count_a_handoff_to_an_agent_as_a_transfer_and_on_its_own() -> None:
    events = [Event(1.0, "c1", "call.started", {"caller": "sip:a@x"}),
              Event(2.0, "c1", "handoff.requested", {"to": BOT, "mode": "agent"}, "h1"),
              Event(3.0, "c2", "call.started", {"caller": "sip:b@x"}),
              Event(4.0, "c2", "handoff.requested", {"to": "sip:h@x", "mode": "warm"}, "h2"),
              Event(5.0, "c3", "call.started", {"caller": "sip:c@x"})]
    overall = compute(events)["overall"]
    assert (overall["transfers"], overall["agent_handoffs"]) == (2, 1)


def test_the_agent_that_has_the_call_may_hand_it_on() -> None:
    handoff = _handoff(final=True)
    control, returned, agent = _connecting(handoff)
    run = control.run
    assert run is not None and not run.agent_has_the_call  # connecting
    control.feed(AgentConnected(agent))
    assert not run.agent_has_the_call  # settling: it may still drop
    control.advance(SETTLE_SECONDS + 0.1)
    assert run.agent_has_the_call
    later = Handoff("call-1", Destination("sip:human@pbx", TransferMode.BRIDGE, 20))
    run.hand_on(later)
    assert control.did("disconnect_agent") == [("disconnect_agent", agent)]
    assert handoff.status is HandoffStatus.COMPLETED and run.over and not returned
    assert kinds(handoff)[-2:] == ["handed_on", "completed"]
    assert handoff.events[-2].detail == {"handoff_id": later.id}
    assert control.state is CallState.TRANSFERRING and not run.agent_has_the_call
