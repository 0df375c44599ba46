"""Handing a call to another AI agent: connect its stream, hold the caller, settle, hand back.

The other agent is a bot's WebSocket (Twilio Media Streams framing, as the
first agent's): ``connect_agent`` opens it with the context packet in
``start.customParameters`` while the caller hears hold audio, never dead air.
It fails, and the runner falls back as for a human who does not answer,
when the socket cannot be opened within the destination's timeout or when
it drops within :data:`SETTLE_SECONDS` of opening (a bot that crashes on its
first message has not taken the call). Once settled the attempt stays in
place like a bridge: the agent ending its part on purpose (a close with code
1000, or POST /calls/{id}/return) hands the caller back to the first agent
(``final`` False) or ends the call (``final`` True); an agent that drops
later sends the caller back to the first agent either way, never to silence.

The parameters are the packet the human's desktop gets, cut down to what a
bot needs and bounded (:data:`MAX_PARAMETERS_BYTES`); its text was redacted
when the packet was built (brain/context.py). The whole packet stays
readable at GET /handoffs/{id}/context with the handoff's token, which the
parameters carry.
"""

from __future__ import annotations

import json
from typing import Any

from warmline.calls.call import CallState
from warmline.transfer.attempt import Attempt
from warmline.transfer.control import (
    AgentConnected,
    AgentEnded,
    AgentFailed,
    AgentId,
    CallerHungUp,
    TimerFired,
    TransferEvent,
)
from warmline.transfer.handoff import Handoff, HandoffStatus

CONNECT_TIMER = "agent-connect"
SETTLE_TIMER = "agent-settle"
SETTLE_SECONDS = 3.0  # an agent that drops sooner than this after connecting failed
MAX_PARAMETERS_BYTES = 8192  # customParameters in all (the transcript is cut to fit)
MAX_TRANSCRIPT_LINES = 20
MAX_LINE_CHARS = 300
MAX_REPORT_CHARS = 500  # what an agent says when it hands back


class AgentAttempt(Attempt):
    """Connect the other agent, hold the caller meanwhile, follow its stream to its end."""

    agent: AgentId | None = None
    connected = False
    ended = False  # the agent's stream is over (or was let go)

    def start(self) -> None:
        control = self.control
        control.play_hold(control.caller)
        self.agent = control.connect_agent(self.destination.uri,
                                           agent_parameters(self.handoff))
        control.set_timer(CONNECT_TIMER, self.destination.timeout)

    def handle(self, event: TransferEvent) -> None:
        match event:
            case AgentConnected(agent=agent) if agent == self.agent and not self.finished:
                self._connected()
            case AgentFailed(agent=agent, reason=reason) if agent == self.agent:
                self.ended = True
                self.fail(f"agent unreachable: {reason}", None)
            case AgentEnded(agent=agent, handed_back=handed_back, report=report) \
                    if agent == self.agent and not self.ended:
                self._ended(handed_back, report[:MAX_REPORT_CHARS])
            case TimerFired(key=key) if key == CONNECT_TIMER and not self.connected:
                self.fail(f"agent not connected within {self.destination.timeout:g} s", None)
            case TimerFired(key=key) if key == SETTLE_TIMER and not self.finished:
                self.succeed("the agent kept the call")
            case CallerHungUp() if not self.finished:
                self.fail("caller hung up", None)
            case CallerHungUp():
                self._let_go()
                self.runner.caller_left_human(self)

    def _connected(self) -> None:
        self.connected = True
        self.control.cancel_timer(CONNECT_TIMER)
        self.control.set_state(CallState.AI)  # with an AI again: its turns and triggers count
        self.handoff.progress(HandoffStatus.CONNECTED, agent=self.destination.uri)
        self.control.set_timer(SETTLE_TIMER, SETTLE_SECONDS)

    def _ended(self, handed_back: bool, report: str) -> None:
        self.ended = True
        self.handoff.emit("agent_ended", agent=self.destination.uri, handed_back=handed_back,
                          report=report)
        if not self.finished:
            if not handed_back:
                self.fail(f"the agent dropped within {SETTLE_SECONDS:g} s of connecting",
                          None)
                return
            self.succeed("the agent ended its part")
        self.handoff.agent_report = report
        self.runner.agent_left(self, handed_back)

    def succeed(self, reason: str) -> None:
        self.control.cancel_timer(SETTLE_TIMER)
        super().succeed(reason)

    def release(self) -> None:
        if self.connected:  # it had the call for a moment: transferring again, not with an AI
            self.control.set_state(CallState.TRANSFERRING)
        self.control.cancel_timer(CONNECT_TIMER)
        self.control.cancel_timer(SETTLE_TIMER)
        self._let_go()

    def _let_go(self) -> None:
        if self.agent is not None and not self.ended:
            self.ended = True
            self.control.disconnect_agent(self.agent)


def agent_parameters(handoff: Handoff) -> dict[str, str]:
    """``start.customParameters`` for the agent taking the call: strings only, bounded.

    The handoff's id and token (the full packet at GET /handoffs/{id}/context?token=),
    ``final``, the summary and intent (the request's context, else the packet's), and
    from the packet the sentiment, the actions the first agent tried and the latest
    transcript lines, cut from the oldest until all fits.
    """
    packet = handoff.packet or {}
    parameters = {"handoff_id": handoff.id, "handoff_token": handoff.token,
                  "final": "true" if handoff.final else "false",
                  # the first agent's own words first, as for a human's whisper
                  "summary": _text(handoff.context.get("summary") or packet.get("summary")),
                  "intent": _text(handoff.context.get("intent")
                                  or (packet.get("intent") or {}).get("name")),
                  "sentiment": _text((packet.get("sentiment") or {}).get("level")),
                  "actions_tried": json.dumps([_text(action.get("name"))
                                               for action in packet.get("actions", [])
                                               if isinstance(action, dict)][-10:])}
    context = json.dumps(handoff.context)
    if len(context) <= MAX_PARAMETERS_BYTES // 4:
        parameters["context"] = context
    lines = [{"speaker": _text(line.get("speaker")), "text": _text(line.get("text"))}
             for line in packet.get("transcript", [])[-MAX_TRANSCRIPT_LINES:]
             if isinstance(line, dict)]
    while True:
        parameters["transcript"] = json.dumps(lines)
        if _size(parameters) <= MAX_PARAMETERS_BYTES or not lines:
            break
        lines.pop(0)
    return parameters


def _text(value: Any) -> str:
    return "" if value is None else str(value)[:MAX_LINE_CHARS]


def _size(parameters: dict[str, str]) -> int:
    return len(json.dumps(parameters).encode())
