"""Outbound calls: warmline rings a customer, and once they answer hands them on.

``POST /calls`` and the callback dialler both come here. The customer's leg
is originated by the switchboard as the "caller" leg of a new
:class:`~warmline.calls.call.Call`, so everything built for inbound calls
(the AI side, transfers to a department, hang-up, records, status
callbacks) works on it unchanged. This module follows the dial: ringing
(``call.outbound_ringing``), answered (``call.answered``) or why not
(``call.no_answer``, ``call.busy``, ``call.failed`` with the SIP status),
a ring timeout that CANCELs, and an SDP answer that cannot be used (BYE).
What happens after the answer is the ``answered`` callback's business
(the engine: the AI, a flow, or a department's humans).

Who may be called is not decided here: the API and the dialler check the
destination against ``[outbound]`` first (transfer/policy.py), and nothing
dials out unless that allow-list says so.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from warmline.calls.call import Call, CallState
from warmline.calls.switchboard import Switchboard
from warmline.media.sdp import SdpError
from warmline.sip.session import (
    CallAnswered,
    CallEnded,
    CallFailed,
    CallProgress,
    SessionEvent,
)
from warmline.transfer.callback_schedule import DialOutcome, outcome_of
from warmline.transfer.handoff import Destination
from warmline.transfer.policy import DestinationPolicy

log = logging.getLogger("warmline.outbound")
UNUSABLE_ANSWER = 488  # what a customer's unusable SDP answer counts as
Recorder = Callable[[str, str, dict[str, Any]], None]  # call id, kind, data


class Then(StrEnum):
    """Who takes the customer once they answer."""

    AI = "ai"  # the AI side that takes inbound calls: the bot, else the scripted flow
    DEPARTMENT = "department"  # a department's humans, with its fallback chain
    DESTINATION = "destination"  # one destination (checked against [transfer] allow)


@dataclass
class OutboundRequest:
    """One call to place: whom, as whom, and what happens once they answer."""

    to: str
    then: Then = Then.AI
    caller_id: str = ""  # our From; "" the trunk's caller ID or the [outbound] default
    department: str | None = None  # then=department
    destination: Destination | None = None  # then=destination
    context: dict[str, Any] = field(default_factory=dict)  # for the AI and the human
    announce: str | None = None  # said to the customer first, once they answer
    ring_timeout: float = 30.0
    trunk: str | None = None  # through this trunk; None: the first that serves ``to``


def nobody() -> DestinationPolicy:
    """The default: no pattern, no trusted network; nothing is dialled out."""
    return DestinationPolicy((), (), "outbound")


@dataclass(frozen=True)
class OutboundPolicy:
    """``[outbound]``: whom warmline may call (an allow-list, as ``[transfer] allow`` is for
    transfers: a stolen token must not dial premium numbers) and as whom."""

    destinations: DestinationPolicy = field(default_factory=nobody)
    caller_id: str = ""  # the From of outbound calls; "" the trunk's caller ID, else ours
    caller_ids: tuple[str, ...] = ()  # others a request may ask for (nobody else is shown)
    ring_timeout: float = 30.0  # default for a request that gives none

    def destination_problem(self, to: str, through_trunk: bool) -> str | None:
        return self.destinations.problem(to, through_trunk)

    def caller_id_problem(self, caller_id: str) -> str | None:
        """A request may only show ``caller_id`` (our own) or one of ``caller_ids``:
        a token holder must not ring customers as their bank."""
        if caller_id in (self.caller_id, *self.caller_ids):
            return None
        return f"{caller_id!r} is not a caller ID this warmline may use: add it to " \
               "[outbound] caller_ids"


Answered = Callable[[Call, OutboundRequest], None]
DialEnded = Callable[[Call, DialOutcome, "int | None"], None]  # outcome, SIP status


class OutboundDial:
    """Follows one customer's leg from INVITE to answer or failure (a leg listener)."""

    def __init__(self, switchboard: Switchboard, request: OutboundRequest, record: Recorder,
                 answered: Answered, ended: DialEnded | None) -> None:
        self.switchboard = switchboard
        self.request = request
        self.record = record
        self.answered = answered
        self.ended = ended
        self.call: Call | None = None  # set as soon as the INVITE is out
        self.outcome: DialOutcome | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._timed_out = False

    def started(self, call: Call) -> None:
        self.call = call
        self._timer = asyncio.get_running_loop().call_later(self.request.ring_timeout,
                                                            self._ring_timeout)

    def heard(self, event: SessionEvent) -> None:
        call = self.call
        if call is None:
            return
        if isinstance(event, CallProgress):
            self._progress(call, event.response.status)
        elif isinstance(event, CallAnswered):
            self._answer(call, event.response.status, event.response.body)
        elif isinstance(event, CallFailed):
            status = 408 if self._timed_out else event.status
            reason = (f"no answer within {self.request.ring_timeout:g} s" if self._timed_out
                      else event.reason)
            self._finish(call, outcome_of(status), status, reason)
        elif isinstance(event, CallEnded) and self.outcome is None:
            self._finish(call, DialOutcome.FAILED, None, "ended before it was answered")

    def _progress(self, call: Call, status: int) -> None:
        if 180 <= status < 190 and call.state is CallState.DIALING:
            call.state = CallState.RINGING
            self.record(call.id, "call.outbound_ringing", {"sip_status": status})

    def _answer(self, call: Call, status: int, sdp: bytes) -> None:
        if self.outcome is not None:
            return
        self._cancel_timer()
        try:
            call.caller.negotiation.accept(sdp)
        except SdpError as error:
            self.switchboard.hang_up(call.caller)
            self._finish(call, DialOutcome.FAILED, UNUSABLE_ANSWER,
                         f"the customer's answer is unusable: {error.reason}")
            return
        self.outcome = DialOutcome.ANSWERED
        call.state = CallState.AI
        self.record(call.id, "call.answered", {"sip_status": status})
        if self.ended is not None:
            self.ended(call, DialOutcome.ANSWERED, status)
        self.answered(call, self.request)

    def _finish(self, call: Call, outcome: DialOutcome, status: int | None,
                reason: str) -> None:
        if self.outcome is not None:
            return
        self._cancel_timer()
        self.outcome = outcome
        self.record(call.id, f"call.{outcome.value}", {"sip_status": status, "reason": reason})
        log.info("outbound call %s: %s (%s %s)", call.id, outcome.value, status, reason,
                 extra={"call_id": call.id})
        if self.ended is not None:
            self.ended(call, outcome, status)

    def _ring_timeout(self) -> None:
        self._timer = None
        call = self.call
        if call is None or self.outcome is not None or call.caller.session.ended:
            return
        self._timed_out = True
        self.switchboard.cancel(call.caller)  # its 487 (or 408) ends the dial as no answer

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


async def place(switchboard: Switchboard, request: OutboundRequest, record: Recorder,
                answered: Answered, ended: DialEnded | None = None,
                created: Callable[[Call], None] | None = None) -> Call:
    """Originate the call ``request`` asks for; the call, ringing. Raises what
    :meth:`Switchboard.originate` raises (no route, DNS, no media port, over max_calls).
    ``created`` hears of the call before its first event is recorded."""
    dial = OutboundDial(switchboard, request, record, answered, ended)
    call = await switchboard.originate(request.to, request.caller_id, dial.heard,
                                      request.trunk)
    if created is not None:
        created(call)
    record(call.id, "call.started", {"caller": request.to, "to": request.to,
                                     "direction": "outbound", "then": request.then.value})
    dial.started(call)
    return call
