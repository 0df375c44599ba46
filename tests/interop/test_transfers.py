"""Transfers against real peers: a sipp caller, a sipp human, warmline's engine between.

Each case asserts what crossed the wire (sipp checks the messages it gets),
the handoff's outcome and events, and that no leg or RTP socket is left.
"""

from __future__ import annotations

import asyncio
import weakref
from pathlib import Path

import pytest

from tests.interop.forgetting import assert_let_go_cleanly, collector_paused
from tests.interop.peers import engine, free_port, relay_block, render_scenario, run_sipp
from tests.interop.test_sipp import FAILURE_TAIL, SUCCESS_TAIL
from warmline.api import http_status
from warmline.calls.call import Call
from warmline.engine import CallEngine
from warmline.media.relay import EmbeddedRelay, PortRange
from warmline.transfer.handoff import Destination, Handoff, HandoffError

pytestmark = pytest.mark.interop


async def run_transfer(tmp_path: Path, caller_scenario: Path, destination: Destination,
                       fallback: list[Destination | str] | None = None,
                       human_args: list[str] | None = None,
                       ) -> tuple[Handoff, list[tuple[str, float]], bool]:
    """Call in with sipp, transfer as soon as the call is answered, return what happened."""
    handoffs: list[Handoff] = []
    returned: list[tuple[str, float]] = []
    base = relay_block()
    relay = EmbeddedRelay("127.0.0.1", PortRange(base, base + 40))
    async with collector_paused(), engine("udp") as running:
        def on_call(call: Call) -> None:
            handoff = Handoff(call.id, destination, fallback=list(fallback or []),
                              context={"intent": "billing"})
            handoffs.append(calls.transfer(call.id, handoff))
            try:  # one handoff at a time per call (no pytest.raises: its ExceptionInfo
                calls.transfer(call.id, Handoff(call.id, destination))  # stays in a cycle)
            except HandoffError as second:
                assert http_status(second) == 409
            else:
                pytest.fail("a second handoff was taken while the first runs")

        calls = CallEngine(running.shell, relay, "127.0.0.1", ["PCMU", "PCMA"], on_call,
                           lambda call, why, away: returned.append((why, away)))
        calls.return_announcement = None  # the AI is told at once (announcing: elsewhere)
        human = None
        if human_args is not None:
            human = asyncio.ensure_future(run_sipp(human_args, tmp_path / "human", timeout=20))
        result = await run_sipp(
            ["-sf", str(caller_scenario), f"127.0.0.1:{running.spec.port}",
             "-p", str(free_port()), "-m", "1"], tmp_path, timeout=20)
        assert result.returncode == 0, result.output[-3000:]
        if human is not None:
            human_result = await human
            assert human_result.returncode == 0, human_result.output[-3000:]
        await asyncio.sleep(0.3)
        for _ in range(100):  # a REFER's report may still come after the caller left
            if all(handoff.ended for handoff in handoffs):
                break
            await asyncio.sleep(0.05)
        legs_left = bool(relay.legs)
        for _ in range(40):
            if not running.ua.sessions:
                break
            await asyncio.sleep(0.05)
        assert not running.ua.sessions, "a dialog was left open"
        # a REFER's listener (which holds its transfer and call) goes with its subscription
        assert not [refer for refer, _ in calls.switchboard._refers.values() if refer.done]
        [call_id] = calls.calls
        freed = weakref.ref(calls.calls[call_id])
        assert_let_go_cleanly(calls)
        assert freed() is None, "the call outlived its letting go"
        await calls.close()
        await relay.close()
    assert handoffs
    return handoffs[0], returned, legs_left


def kinds(handoff: Handoff) -> list[str]:
    return [event.kind for event in handoff.events]


def test_blind_transfer_completes_only_on_a_2xx_notify(tmp_path: Path) -> None:
    scenario = render_scenario("refer_notify_bye.xml", tmp_path, final="200 OK",
                               tail=SUCCESS_TAIL)
    handoff, returned, legs_left = asyncio.run(run_transfer(
        tmp_path, scenario, Destination("sip:human@127.0.0.1:5999", "blind", 5)))
    assert handoff.status == "completed" and handoff.sip_status == 200
    assert kinds(handoff)[:3] == ["requested", "attempt", "accepted"]
    assert "attempt_succeeded" in kinds(handoff)
    assert not returned and not legs_left


def test_blind_transfer_that_fails_brings_the_caller_back_to_the_ai(tmp_path: Path) -> None:
    scenario = render_scenario("refer_notify_bye.xml", tmp_path, final="486 Busy Here",
                               tail=FAILURE_TAIL)
    handoff, returned, legs_left = asyncio.run(run_transfer(
        tmp_path, scenario, Destination("sip:human@127.0.0.1:5999", "blind", 5),
        fallback=["ai"]))
    assert handoff.status == "failed" and handoff.sip_status == 486
    assert "returned_to_ai" in kinds(handoff)
    assert returned and "486" in returned[0][0]
    assert not legs_left  # the caller hung up later; their leg closed with the call


def test_refused_refer_becomes_a_bridge_that_the_caller_ends(tmp_path: Path) -> None:
    (tmp_path / "human").mkdir()
    human_port = free_port()
    scenario = render_scenario("refer_refused.xml", tmp_path, seconds="1500")
    handoff, returned, legs_left = asyncio.run(run_transfer(
        tmp_path, scenario, Destination(f"sip:human@127.0.0.1:{human_port}", "blind", 5),
        human_args=["-sn", "uas", "-i", "127.0.0.1", "-p", str(human_port),
                    "-mi", "127.0.0.1", "-mp", str(free_port()), "-m", "1"]))
    events = kinds(handoff)
    assert events.index("attempt_failed") < events.index("fallback") < events.index("connected")
    fallback = next(e for e in handoff.events if e.kind == "fallback")
    assert fallback.detail["mode"] == "bridge" and "403" in fallback.detail["why"]
    assert handoff.status == "completed"  # the caller hung up after talking to the human
    assert not returned and not legs_left  # the human's leg went with the caller's BYE


def test_a_202_without_an_outcome_is_not_success(tmp_path: Path) -> None:
    """NOTIFY 100 and then silence: the NOTIFY timeout fails it and the caller stays."""
    scenario = render_scenario("refer_silent.xml", tmp_path, seconds="2500")
    handoff, returned, legs_left = asyncio.run(run_transfer(
        tmp_path, scenario, Destination("sip:human@127.0.0.1:5999", "blind", 1.0),
        fallback=["ai"]))
    assert handoff.status == "failed" and handoff.sip_status == 408
    assert handoff.reason == "no final NOTIFY within 1 s"
    accepted = next(e for e in handoff.events if e.kind == "accepted")
    failed = next(e for e in handoff.events if e.kind == "attempt_failed")
    assert 0.5 < failed.at - accepted.at < 1.3
    assert returned and not legs_left
