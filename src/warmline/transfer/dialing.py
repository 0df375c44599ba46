"""Calling the human for an attempt: probe, webhook, INVITE with the context, ring timeout.

Bridge, warm and attended attempts all reach the human the same way; each
owns one :class:`HumanDial` and decides what happens once the human answers.
In order: an optional OPTIONS probe (a destination that does not answer 2xx
is skipped), the signed webhook so the desktop knows before the phone rings,
then the INVITE carrying the context headers and the caller's identity,
with a ring timeout that CANCELs. Whatever the order of the answers, a dial
that was given up on never connects: a 200 that crosses our CANCEL is
answered with a BYE (the control does that when the leg is hung up).

A destination with ``ring_with`` is a group rung at once (simultaneous ring,
the on-call staff): one INVITE per URI, one ring timeout for all; the first
to answer takes the call and the others are CANCELed with
``Reason: SIP;cause=200;text="Call completed elsewhere"`` (RFC 3326), so
their phones log no missed call. The attempt fails only when every member
has failed (busy if any was busy) or the timeout runs out.
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
COMPLETED_ELSEWHERE = 'SIP;cause=200;text="Call completed elsewhere"'


class DialState(Enum):
    IDLE = "idle"
    PROBING = "probing"
    NOTIFYING = "notifying"  # the webhook is on its way
    RINGING = "ringing"  # INVITE sent, no final answer yet
    ANSWERED = "answered"
    GONE = "gone"  # failed or given up


Failure = Callable[[str, "int | None"], None]


def _nothing() -> None:
    """What an untied dial tells of an answer (its call is forgotten)."""


def _no_failure(reason: str, status: int | None) -> None:
    """What an untied dial tells of a failure (its call is forgotten)."""


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
        self.leg: LegId | None = None  # the leg that answered (before that: the first dialled)
        self.ringing: dict[LegId, str] = {}  # legs dialled and not failed yet: their URI
        self._failures: list[tuple[int | None, str]] = []  # (status, failure) of the others
        self._told_ringing = False  # the handoff's ringing step is recorded once

    def untie(self) -> None:
        """The call is forgotten: its attempt's methods go (they hold the attempt)."""
        self._answered = _nothing
        self._failed = _no_failure

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
            case LegProgress(leg=leg, status=status) if leg in self.ringing:
                if 180 <= status < 190 and self.state is DialState.RINGING \
                        and not self._told_ringing:  # once, not once per phone of a group
                    self._told_ringing = True
                    self.handoff.progress(HandoffStatus.RINGING, sip_status=status)
            case LegAnswered(leg=leg) if leg in self.ringing:
                self._on_answer(event)
            case LegFailed(leg=leg, status=status, reason=reason, unresolved=name) \
                    if leg in self.ringing:
                self._member_failed(leg, status, reason, name)
            case TimerFired(key=key) if key == RING_TIMER:
                self._ring_timeout()
            case _:
                return False
        return True

    def give_up(self) -> None:
        """Stop whatever is under way; every leg dialled is cancelled or hung up."""
        self.control.cancel_timer(RING_TIMER)
        if self.state is DialState.RINGING:
            for leg in list(self.ringing):
                self.control.hang_up(leg)
        elif self.state is DialState.ANSWERED and self.leg is not None:
            self.control.hang_up(self.leg)
        self.ringing.clear()
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
        self.state = DialState.RINGING
        for uri in destination.uris:
            identity = identity_for(self.handoff.caller_id, facts.party, facts.asserted,
                                    facts.dialled, uri, facts.identity, facts.privacy)
            leg = self.control.dial(uri, identity, self.handoff.context_headers)
            self.ringing[leg] = uri
            if self.leg is None:
                self.leg = leg
        self.control.set_timer(RING_TIMER, destination.timeout)

    def _on_answer(self, event: LegAnswered) -> None:
        if self.state is not DialState.RINGING:
            return  # given up meanwhile (or another answered first): its BYE is on its way
        if event.problem is not None:
            problem = f"the destination's answer is unusable: {event.problem}"
            self.control.hang_up(event.leg)  # a member of a group: the others ring on
            self._member_failed(event.leg, 488, problem, None, worded=problem)
            return
        self.control.cancel_timer(RING_TIMER)
        self.leg = event.leg
        self._cancel_the_others(event.leg)
        self.state = DialState.ANSWERED
        self.handoff.progress(HandoffStatus.ANSWERED, sip_status=event.status,
                              **({"by": self.ringing[event.leg]} if self.destination.ring_with
                                 else {}))
        self._answered()

    def _cancel_the_others(self, winner: LegId) -> None:
        for leg in list(self.ringing):
            if leg != winner:
                self.control.cancel(leg, COMPLETED_ELSEWHERE)
                del self.ringing[leg]

    def _member_failed(self, leg: LegId, status: int | None, reason: str,
                       unresolved: str | None, worded: str | None = None) -> None:
        """One leg of the attempt failed; the attempt fails when the last one has.
        ``worded``: the failure as the records should say it, when not from a SIP reason."""
        if self.state is not DialState.RINGING:
            return
        uri = self.ringing.pop(leg)
        failure = worded or _wording(status, reason, uri)
        if self.ringing:  # others still ring: note this one and wait for them
            self.handoff.emit("ring_failed", to=uri, sip_status=status, reason=failure)
            self._failures.append((status, failure))
            return
        self.control.cancel_timer(RING_TIMER)
        if unresolved is not None and not self.destination.ring_with:
            self._unreachable(unresolved, reason)
            return
        self.state = DialState.GONE
        status, failure = _most_telling([*self._failures, (status, failure)])
        self._failed(failure, status)

    def _ring_timeout(self) -> None:
        if self.state is not DialState.RINGING:
            return
        for leg in list(self.ringing):
            self.control.cancel(leg)
        self.ringing.clear()
        self.state = DialState.GONE
        self._failed(f"no answer within {self.destination.timeout:g} s", 408)


def _wording(status: int | None, reason: str, uri: str) -> str:
    """A leg's failure in the words the records use."""
    if status is None:
        return f"cannot call {uri}: {reason}"
    return f"{failure_kind(status)}: {status} {reason}".rstrip()


def _most_telling(failures: list[tuple[int | None, str]]) -> tuple[int | None, str]:
    """The group's failure as one: busy if anybody was busy (they are there, just
    occupied), else the last one."""
    for status, reason in failures:
        if status in (486, 600):
            return status, reason
    return failures[-1]


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
