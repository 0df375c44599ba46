"""Calling the human for an attempt: probe, webhook, INVITE with the context, ring timeout.

Bridge, warm and attended attempts all reach the human the same way; each
owns one :class:`HumanDial` and decides what happens once the human answers.
In order: an optional OPTIONS probe (a destination that does not answer 2xx
is skipped), the signed webhook so the desktop knows before the phone rings,
then the INVITE carrying the context headers and the caller's identity,
with a ring timeout that CANCELs. Whatever the order of the answers, a dial
that was given up on never connects: a 200 that crosses our CANCEL is
answered with a BYE (the control does that when the leg is hung up).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

from warmline.transfer.control import (
    CallControl,
    LegAnswered,
    LegFailed,
    LegId,
    LegProgress,
    ProbeAnswered,
    TimerFired,
    TransferEvent,
    WebhookDone,
    WebhookKind,
)
from warmline.transfer.handoff import Destination, Handoff, HandoffStatus
from warmline.transfer.identity import identity_for

RING_TIMER = "ring"


class DialState(Enum):
    IDLE = "idle"
    PROBING = "probing"
    NOTIFYING = "notifying"  # the webhook is on its way
    RINGING = "ringing"  # INVITE sent, no final answer yet
    ANSWERED = "answered"
    GONE = "gone"  # failed or given up


Failure = Callable[[str, "int | None"], None]


class HumanDial:
    """Reaches the human for one attempt; ``answered()`` or ``failed(reason, status)``."""

    def __init__(self, control: CallControl, handoff: Handoff, destination: Destination,
                 answered: Callable[[], None], failed: Failure) -> None:
        self.control = control
        self.handoff = handoff
        self.destination = destination
        self._answered = answered
        self._failed = failed
        self.state = DialState.IDLE
        self.leg: LegId | None = None

    def start(self) -> None:
        if self.destination.probe:
            self.state = DialState.PROBING
            self.control.probe(self.destination.uri)
        else:
            self._notify_desk()

    def handle(self, event: TransferEvent) -> bool:
        """Take the events of the dial; True when ``event`` was one of them."""
        match event:
            case ProbeAnswered(uri=uri, status=status, unresolved=name, reason=reason) \
                    if self.state is DialState.PROBING:
                if name is not None or status == 0:
                    self._unreachable(name, reason)
                else:
                    self._probed(uri, status)
            case WebhookDone(kind=WebhookKind.WEBHOOK) if self.state is DialState.NOTIFYING:
                self._ring()
            case LegProgress(leg=leg, status=status) if leg == self.leg:
                if 180 <= status < 190 and self.state is DialState.RINGING:
                    self.handoff.progress(HandoffStatus.RINGING, sip_status=status)
            case LegAnswered(leg=leg) if leg == self.leg:
                self._on_answer(event)
            case LegFailed(leg=leg, status=status, reason=reason, unresolved=name) \
                    if leg == self.leg:
                if name is not None and self.state is DialState.RINGING:
                    self.control.cancel_timer(RING_TIMER)
                    self._unreachable(name, reason)
                else:
                    self._on_failure(status, reason)
            case TimerFired(key=key) if key == RING_TIMER:
                self._ring_timeout()
            case _:
                return False
        return True

    def give_up(self) -> None:
        """Stop whatever is under way; a leg dialled is cancelled or hung up."""
        self.control.cancel_timer(RING_TIMER)
        if self.leg is not None and self.state in (DialState.RINGING, DialState.ANSWERED):
            self.control.hang_up(self.leg)
        self.state = DialState.GONE

    def _probed(self, uri: str, status: int) -> None:
        self.handoff.emit("probed", to=uri, sip_status=status)
        if 200 <= status < 300:
            self._notify_desk()
        else:
            self.state = DialState.GONE
            self._failed(f"not available: OPTIONS answered {status}", status)

    def _unreachable(self, name: str | None, reason: str) -> None:
        """The destination's name did not resolve (or nothing can route to it)."""
        self.state = DialState.GONE
        if name is not None:
            self.handoff.emit("dns_failed", name=name, reason=reason)
            self._failed(f"dns_failed: {reason}", None)
        else:
            self._failed(f"cannot call {self.destination.uri}: {reason}", None)

    def _notify_desk(self) -> None:
        self.state = DialState.NOTIFYING
        self.control.deliver_webhook(self.handoff, WebhookKind.WEBHOOK)

    def _ring(self) -> None:
        destination, facts = self.destination, self.control.caller_facts
        identity = identity_for(self.handoff.caller_id, facts.party, facts.asserted,
                                facts.dialled, destination.uri, facts.identity, facts.privacy)
        self.state = DialState.RINGING
        self.leg = self.control.dial(destination.uri, identity, self.handoff.context_headers)
        self.control.set_timer(RING_TIMER, destination.timeout)

    def _on_answer(self, event: LegAnswered) -> None:
        if self.state is not DialState.RINGING:
            return  # given up meanwhile: hang_up() has sent the BYE
        self.control.cancel_timer(RING_TIMER)
        if event.problem is not None:
            self.give_up()
            self._failed(f"the destination's answer is unusable: {event.problem}", 488)
            return
        self.state = DialState.ANSWERED
        self.handoff.progress(HandoffStatus.ANSWERED, sip_status=event.status)
        self._answered()

    def _on_failure(self, status: int | None, reason: str) -> None:
        if self.state is not DialState.RINGING:
            return
        self.control.cancel_timer(RING_TIMER)
        self.state = DialState.GONE
        if status is None:
            self._failed(f"cannot call {self.destination.uri}: {reason}", None)
        else:
            self._failed(f"{failure_kind(status)}: {status} {reason}".rstrip(), status)

    def _ring_timeout(self) -> None:
        if self.state is not DialState.RINGING:
            return
        assert self.leg is not None
        self.control.cancel(self.leg)
        self.state = DialState.GONE
        self._failed(f"no answer within {self.destination.timeout:g} s", 408)


def failure_kind(status: int) -> str:
    """What a final status means for a transfer, in the words the records use."""
    if status in (486, 600):
        return "busy"
    if status in (401, 407):  # still challenged after our credentials: wrong or missing
        return "authentication failed"
    if status in (408, 480, 487):
        return "no answer"
    if status in (603, 403):
        return "declined"
    if status in (404, 604, 410, 484):
        return "not found"
    if status >= 500:
        return "server error"
    return "refused"
