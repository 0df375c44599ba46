"""Asking for a handoff to another agent over HTTP and in the config: clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.unit.test_pii_nowhere import Rig, rig  # noqa: F401  (the fixture)
from warmline.agents.handoff import AgentSpec
from warmline.agents.scripted import FlowError, load_flow
from warmline.api import build_app
from warmline.config import ConfigError, load
from warmline.transfer.handoff import TransferMode
from warmline.transfer.policy import DestinationPolicy


@pytest.mark.parametrize(("body", "status", "detail"), [
    ({"to": "ws://127.0.0.1:9/b", "mode": "bridge"}, 422, "needs mode agent"),
    ({"to": "ws:/127.0.0.1/b"}, 422, "ws://HOST"),
    ({"to": "wss://bots.example/b"}, 403, "to: wss://bots.example/b is not an allowed agent"),
    ({"to": "agent:nobody"}, 422, "to: no agent 'nobody'"),
    ({"to": "sip:h@127.0.0.1", "fallback": [{"to": "agent:nobody"}]}, 422,
     "fallback[0]: no agent 'nobody'"),
])
def test_a_bad_agent_destination_is_refused_naming_the_field(
        rig: Rig, body: dict[str, object], status: int, detail: str) -> None:  # noqa: F811
    rig.engine.destination_policy = DestinationPolicy()  # as serve has it: loopback trusted
    with TestClient(build_app(rig.engine)) as api:
        answer = api.post("/calls/call-pii-1/transfer", json=body)
    assert answer.status_code == status and detail in answer.text, answer.text
    assert not rig.controls  # nothing started


def test_a_trusted_url_and_a_named_agent_are_taken_as_mode_agent(rig: Rig) -> None:  # noqa: F811
    rig.engine.agent_streams.agents["billing"] = AgentSpec("wss://bots.example/billing")
    with TestClient(build_app(rig.engine)) as api:
        first = api.post("/calls/call-pii-1/transfer",
                         json={"to": "ws://127.0.0.1:9/b", "final": False})
        second = api.post("/calls/call-pii-2/transfer", json={"to": "agent:billing"})
    assert (first.status_code, second.status_code) == (202, 202), (first.text, second.text)
    for answer, uri in ((first, "ws://127.0.0.1:9/b"), (second, "agent:billing")):
        handoff = rig.engine.handoffs[answer.json()["handoff_id"]]
        assert handoff.first is not None and handoff.first.mode is TransferMode.AGENT
        _, _, target, parameters = rig.controls[handoff.id].last("connect_agent")
        assert target == uri and parameters["handoff_token"] == handoff.token


def test_a_return_with_no_agent_on_the_call_is_a_conflict(rig: Rig) -> None:  # noqa: F811
    token = rig.engine.calls["call-pii-1"].token
    with TestClient(build_app(rig.engine, "master")) as api:
        answer = api.post("/calls/call-pii-1/return", json={"report": "done"},
                          headers={"Authorization": f"Bearer {token}"})
        too_long = api.post("/calls/call-pii-1/return", json={"report": "x" * 501},
                            headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 409 and "not with an agent" in answer.text
    assert too_long.status_code == 422


@pytest.mark.parametrize(("text", "expected"), [
    ('[agents.b]\nurl = "http://bots.example/b"\n', "warmline.toml:2: agents.b.url:"),
    ('[agents.b]\nurl = "ws://u:p@bots.example/b"\n', "agents.b: 'ws://u:p@bots.example/b' "
                                                      "carries credentials"),
    ('[agents."b c"]\nurl = "ws://bots.example/b"\n', "agents.b c: 'agent:b c'"),
    ('[agents.b]\nurl = "ws://bots.example/b"\nconnect_timeout = 0\n',
     "agents.b.connect_timeout:"),
    ('[[departments]]\nname = "b"\ndestinations = [{ uri = "agent:nobody" }]\n',
     "names no [agents.nobody]"),
])
def test_agents_in_the_config_are_checked_naming_the_key(tmp_path: Path, text: str,
                                                        expected: str) -> None:
    path = tmp_path / "warmline.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as broken:
        load(path)
    assert expected in str(broken.value), str(broken.value)


def test_a_department_may_hand_calls_to_a_named_agent(tmp_path: Path) -> None:
    path = tmp_path / "warmline.toml"
    path.write_text('[agents.billing]\nurl = "wss://bots.example/billing"\nconnect_timeout = 3\n'
                    '[[departments]]\nname = "billing"\n'
                    'destinations = [{ uri = "agent:billing" }, { uri = "sip:b@127.0.0.1" }]\n')
    config = load(path)
    assert config.build_agents() == {"billing": AgentSpec("wss://bots.example/billing", 3.0)}
    router = config.escalation(None).router
    assert router is not None
    [department] = router.departments
    assert [d.mode for d in department.destinations] == [TransferMode.AGENT, TransferMode.WARM]


def test_a_flow_step_may_hand_the_call_to_an_agent(tmp_path: Path) -> None:
    flow = tmp_path / "menu.flow.toml"
    flow.write_text('start = "a"\n[steps.a]\ntransfer = { to = "agent:billing" }\n')
    step = load_flow(flow).steps["a"].transfer
    assert step is not None and step.destination().mode is TransferMode.AGENT
    flow.write_text('start = "a"\n[steps.a]\ntransfer = { to = "ws://h/b", mode = "warm" }\n')
    with pytest.raises(FlowError, match=r"steps\.a\.transfer\.to: .*needs mode agent"):
        load_flow(flow)


def test_what_an_agent_reports_is_redacted_before_anyone_sees_it() -> None:
    from warmline.agents.handoff import _ended
    from warmline.agents.media_stream import StreamEnd
    from warmline.transfer.control import AgentId

    said = "card 4111 1111 1111 1111 charged"
    ended = _ended(AgentId(1), StreamEnd(handed_back=True, report=said))
    assert ended.handed_back and "4111" not in ended.report and "charged" in ended.report
