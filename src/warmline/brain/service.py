"""Turns in, handoffs out: what the brain does for the calls of a running engine.

Each call's turns are kept in a :class:`Conversation`; every caller turn runs
the triggers, and the first firing while the caller is with the AI starts
the handoff the policy plans (routed by intent and skills), carrying the
context packet. Every handoff, however it was asked for (a trigger, a flow,
the REST API, an in-process AI), is prepared here before it runs: the
packet as of now, the screen-pop link, the SIP headers within the budget,
and the trigger log's hook on its outcome. The webhook to the desk is sent
from here too. The transfer layer below knows none of this.

These are the two doors by which words come in, so redaction happens here
(redact.py): a turn is redacted before anything keeps, evaluates, logs or
journals it, and a handoff's free text (its context, whispers and
announcement) before it is stored, served, recorded or spoken.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from warmline.brain.calibration import TriggerLog
from warmline.brain.delivery import send_webhook, sip_headers
from warmline.brain.escalation import Conversation, EscalationPolicy, turn_skills
from warmline.brain.redact import redact, redact_value
from warmline.brain.triggers import Firing
from warmline.brain.turns import Turn
from warmline.calls.call import Call, CallState
from warmline.transfer.control import WebhookKind
from warmline.transfer.handoff import Destination, Handoff, HandoffError, Problem

log = logging.getLogger("warmline.calls")

Recorder = Callable[[str, str, dict[str, Any]], None]  # call id, kind, data
Starter = Callable[[Call, Handoff], Handoff]  # runs a prepared handoff (the engine's transfer)


@dataclass(frozen=True)
class TurnResult:
    fired: list[Firing]
    handoff: Handoff | None  # started by this turn's firing


class Brain:
    """Conversations, escalations and context for the engine's calls."""

    def __init__(self, policy: EscalationPolicy, trigger_log: TriggerLog,
                 record: Recorder) -> None:
        self.policy = policy
        self.trigger_log = trigger_log
        self.record = record
        self.conversations: dict[str, Conversation] = {}

    def forget(self, call_id: str) -> None:
        self.conversations.pop(call_id, None)

    def prepare(self, call: Call, handoff: Handoff) -> None:
        """The packet, screen-pop link, SIP headers and outcome hook for ``handoff``;
        its free text redacted first."""
        redact_handoff(handoff)
        policy = self.policy
        if handoff.packet is None:
            handoff.packet = self._conversation(call).packet(call.id, call.caller_uri, policy)
            _intent_from_request(handoff.packet, handoff.context)
        if policy.public_url:
            handoff.screen_pop = (f"{policy.public_url}/handoffs/{handoff.id}"
                                  f"?token={handoff.token}")
        handoff.headers = sip_headers(handoff.packet, handoff.id, handoff.screen_pop,
                                      policy.budget)
        handoff.on_finish = self._finished

    def add_turn(self, call: Call, turn: Turn, start: Starter) -> TurnResult:
        """Record a turn; a trigger firing may start the configured handoff via ``start``."""
        if call.ended:
            raise HandoffError(f"call {call.id} has ended", Problem.CONFLICT)
        turn = turn.redacted()
        conversation = self._conversation(call)
        previous = conversation.turns[-1].intent if conversation.turns else None
        fired = conversation.add(turn, self.policy.triggers)
        if turn.intent and turn.intent != previous:
            self.record(call.id, "call.intent", {"intent": turn.intent,
                                                 "confidence": turn.confidence})
        for firing in fired:
            log.info("call %s: trigger %s fired on turn %d: %s", call.id, firing.trigger,
                     firing.turn, firing.evidence, extra={"call_id": call.id})
            self.trigger_log.firing(call.id, firing)
        if not fired or call.state is not CallState.AI or not self.can_escalate:
            return TurnResult(fired, None)
        return TurnResult(fired, self._escalate(call, fired[0], start))

    @property
    def can_escalate(self) -> bool:
        return self.policy.destination is not None or self.policy.router is not None

    def escalate(self, call: Call, reason: str, context: dict[str, Any] | None,
                 start: Starter) -> Handoff:
        """Escalate now (an agent or a flow decided), routed and packed as a trigger would be."""
        if not self.can_escalate:
            raise HandoffError("escalation: no destination or departments configured",
                               Problem.CONFLICT)
        turns = len(self._conversation(call).turns)
        return self._escalate(call, Firing("requested", {"reason": reason}, turns), start,
                              context)

    def caller_pressed(self, call: Call, digit: str, start: Starter) -> None:
        """While with the AI, a caller's DTMF is a turn: 0 asks for a person."""
        if call.state is CallState.AI and not call.ended:
            self.add_turn(call, Turn("caller", dtmf=digit), start)

    async def deliver(self, handoff: Handoff, kind: WebhookKind) -> bool:
        """POST the packet to the desk (a webhook once before the phone rings, or a ticket).

        Never blocks long (the policy's timeout); the outcome is an event of the handoff.
        """
        policy = self.policy
        if not policy.webhook_url or handoff.packet is None or \
                (kind is WebhookKind.WEBHOOK and handoff.webhook_sent):
            return False
        handoff.webhook_sent = True
        result = await send_webhook(policy.webhook_url, policy.webhook_secret,
                                    {**handoff.packet, "type": kind.value,
                                     "handoff_id": handoff.id,
                                     "screen_pop": handoff.screen_pop},
                                    policy.webhook_timeout)
        handoff.emit(f"{kind}_delivered" if result.ok else f"{kind}_failed",
                     status=result.status, detail=result.detail,
                     seconds=round(result.seconds, 3))
        return result.ok

    def _escalate(self, call: Call, firing: Firing, start: Starter,
                  context: dict[str, Any] | None = None) -> Handoff:
        packet = self._conversation(call).packet(call.id, call.caller_uri, self.policy, firing)
        first, fallback = self.policy.plan(packet["intent"]["name"],
                                           turn_skills(self._conversation(call)))
        handoff = Handoff(call.id, first, fallback=list(fallback), packet=packet,
                          context=context or {})
        handoff.emit("triggered", trigger=firing.trigger, evidence=packet["trigger"])
        return start(call, handoff)

    def _conversation(self, call: Call) -> Conversation:
        conversation = self.conversations.get(call.id)
        if conversation is None:
            conversation = self.conversations[call.id] = Conversation()
        return conversation

    def _finished(self, handoff: Handoff) -> None:
        log.info("handoff %s of call %s %s: %s (SIP %s)", handoff.id, handoff.call_id,
                 handoff.status, handoff.reason, handoff.sip_status,
                 extra={"call_id": handoff.call_id, "handoff_id": handoff.id})
        self.trigger_log.outcome(handoff)


def redact_handoff(handoff: Handoff) -> None:
    """What the asker wrote freely (REST ``context`` at any depth, whispers, the
    announcement) redacted in place; destinations, being routing, are not touched.

    Done before the handoff is stored (the screen-pop serves it), recorded or
    run (whispers are spoken to the human, the announcement is recorded).
    """
    handoff.context = redact_value(handoff.context)
    if handoff.announce:
        handoff.announce = redact(handoff.announce)
    for step in (handoff.first, *handoff.fallback):
        if isinstance(step, Destination) and step.whisper:
            step.whisper = redact(step.whisper)


def _intent_from_request(packet: dict[str, Any], context: dict[str, Any]) -> None:
    """A transfer asked for over REST may name the intent (``context.intent``) when no
    turn did: the packet, and so X-Warmline-Intent, carry it instead of nothing."""
    intent = context.get("intent")
    if packet["intent"]["name"] is None and isinstance(intent, str) and intent.strip():
        packet["intent"] = {"name": intent.strip()[:100], "confidence": None,
                            "source": "request"}
