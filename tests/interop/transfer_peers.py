"""Peers and a harness for transfer tests: sipp callers and humans around a CallEngine."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.interop.forgetting import assert_let_go_cleanly, collector_paused
from tests.interop.peers import (
    SippResult,
    engine,
    free_port,
    relay_block,
    render_scenario,
    run_sipp,
)
from tests.interop.test_sipp import SUCCESS_TAIL
from warmline.calls.call import Call
from warmline.engine import CallEngine
from warmline.media.relay import EmbeddedRelay, PortRange
from warmline.transfer.handoff import Handoff

WAIT_FOR_BYE = SUCCESS_TAIL  # wait for the other side's BYE and answer it


def _bye_after(after_ms: int, from_header: str, to_header: str, cseq: int,
               answered: int = 200) -> str:
    return f"""  <pause milliseconds="{after_ms}"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: {from_header}
      To: {to_header}
      Call-ID: [call_id]
      CSeq: {cseq} BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="{answered}"/>"""


def caller_hangs_up(after_ms: int, answered: int = 200) -> str:
    """caller_waits.xml's tail: the caller hangs up after ``after_ms`` (its BYE answered
    ``answered``)."""
    return _bye_after(after_ms, _CALLER, "<sip:ai@[remote_ip]:[remote_port]>[$ai_tag]", 9,
                      answered)


def human_hangs_up(after_ms: int, answered: int = 200) -> str:
    """human_answers.xml's tail: the human hangs up after ``after_ms``."""
    return _bye_after(after_ms, _HUMAN, "[$remote_from]", 1, answered)


@dataclass
class Human:
    """A sipp playing the human's phone with one of the human_*.xml scenarios."""

    scenario: str
    markers: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    calls: int = 1  # dialogs the phone takes before sipp exits

    @property
    def uri(self) -> str:
        return f"sip:human@127.0.0.1:{self.port}"

    async def run(self, workdir: Path) -> SippResult:
        workdir.mkdir(exist_ok=True)
        defaults = {"from": "sip:caller@", "checks": ""} if "answers" in self.scenario else {}
        scenario = render_scenario(self.scenario, workdir, **{**defaults, **self.markers})
        return await run_sipp(["-sf", str(scenario), "-i", "127.0.0.1", "-p", str(self.port),
                               "-mi", "127.0.0.1", "-mp", str(free_port()), "-m", str(self.calls)],
                              workdir, timeout=20)


@dataclass
class Outcome:
    handoff: Handoff
    returned: list[tuple[str, float]]
    legs_left: int
    call: Call
    engine: CallEngine


async def run_transfer(tmp_path: Path, caller_tail: str,
                       make_handoff: Callable[[Call], Handoff | None],
                       humans: list[Human], caller: str = "caller_waits.xml",
                       caller_markers: dict[str, str] | None = None,
                       announcement: str | None = None,
                       configure: Callable[[CallEngine], None] | None = None,
                       started_by_engine: bool = False,
                       engine_options: dict[str, Any] | None = None,
                       let_go: bool = True) -> Outcome:
    """A sipp caller calls in; on answer ``make_handoff`` is started; every peer must pass.

    ``started_by_engine``: ``make_handoff`` starts the handoff itself (a trigger did).
    ``let_go``: the ended call is let go before the engine closes, leaving no reference
    cycle (False: the test reads what the engine drops then, such as the brain's turns).
    """
    handoffs: list[Handoff] = []
    calls_seen: list[Call] = []
    returned: list[tuple[str, float]] = []
    base = relay_block()
    relay = EmbeddedRelay("127.0.0.1", PortRange(base, base + 60))
    markers = {"tail": caller_tail} if caller_tail else {}
    if caller == "caller_waits.xml":
        markers["headers"] = ""  # extra INVITE headers, each after a newline
    markers.update(caller_markers or {})
    caller_scenario = render_scenario(caller, tmp_path, **markers)
    async with collector_paused(), engine("udp") as running:
        def on_call(call: Call) -> None:
            calls_seen.append(call)
            handoff = make_handoff(call)
            if started_by_engine:  # a trigger started it, now or later in the call
                return
            assert handoff is not None
            handoffs.append(calls.transfer(call.id, handoff))

        calls = CallEngine(running.shell, relay, "127.0.0.1", ["PCMU", "PCMA"], on_call,
                           lambda call, why, away: returned.append((why, away)),
                           records_dir=tmp_path / "records", **(engine_options or {}))
        calls.return_announcement = announcement
        if configure is not None:
            configure(calls)
        peers = [asyncio.ensure_future(human.run(tmp_path / f"human{n}"))
                 for n, human in enumerate(humans)]
        result = await run_sipp(
            ["-sf", str(caller_scenario), f"127.0.0.1:{running.spec.port}",
             "-p", str(free_port()), "-m", "1"], tmp_path, timeout=20)
        assert result.returncode == 0, "caller: " + result.output[-3000:]
        for n, peer in enumerate(peers):
            human_result = await peer
            assert human_result.returncode == 0, f"human {n}: " + human_result.output[-3000:]
        await asyncio.sleep(0.3)
        legs_left = len(relay.legs)
        for _ in range(40):  # transactions may still be finishing their last exchange
            if not running.ua.sessions:
                break
            await asyncio.sleep(0.05)
        live = [(s.call_id, s.state.value) for s in running.ua.sessions]
        assert not live, f"dialogs left open: {live}"
        # the brain's handoffs whole, before letting go keeps them only as records
        escalated = [calls.handoffs[h] for call in calls_seen[:1] for h in call.handoff_ids]
        if let_go:
            assert_let_go_cleanly(calls)
        await calls.close()
        await relay.close()
    assert calls_seen
    started = handoffs or escalated
    assert started, "no handoff was started"
    return Outcome(started[0], returned, legs_left, calls_seen[0], calls)


def kinds(handoff: Handoff) -> list[str]:
    return [event.kind for event in handoff.events]


_CALLER = '"Caller" <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]'
_HUMAN = "<sip:human@[local_ip]:[local_port]>;tag=[pid]SIPpTag01[call_number]"


def _info_after(after_ms: int, from_header: str, to_header: str, cseq: int, digit: str,
                then: str) -> str:
    return f"""  <pause milliseconds="{after_ms}"/>
  <send retrans="500">
    <![CDATA[
      INFO [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: {from_header}
      To: {to_header}
      Call-ID: [call_id]
      CSeq: {cseq} INFO
      Max-Forwards: 70
      Content-Type: application/dtmf-relay
      Content-Length: [len]

      Signal={digit}
      Duration=160
    ]]>
  </send>
  <recv response="200"/>
{then}"""


def human_presses(digit: str, after_ms: int, then: str = WAIT_FOR_BYE) -> str:
    """human_answers.xml's tail: the human keys ``digit`` (SIP INFO dtmf-relay), then ``then``."""
    return _info_after(after_ms, _HUMAN, "[$remote_from]", 2, digit, then)


def expect_headers(**checks: tuple[str, str]) -> str:
    """sipp actions requiring each ``variable=(header, POSIX regexp)`` in the INVITE."""
    lines = [f'      <ereg regexp="{regexp}" search_in="hdr" header="{header}:" '
             f'check_it="true" assign_to="{variable}"/>'
             for variable, (header, regexp) in checks.items()]
    used = " ".join(f"[${variable}]" for variable in checks)
    return "\n".join([*lines, f'      <log message="{used}"/>'])


def caller_presses(digit: str, after_ms: int, then: str) -> str:
    """caller_waits.xml's tail: the caller keys ``digit`` (SIP INFO), then ``then``."""
    return _info_after(after_ms, _CALLER, "<sip:ai@[remote_ip]:[remote_port]>[$ai_tag]", 5,
                       digit, then)
