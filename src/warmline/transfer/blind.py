"""Blind transfer: REFER the caller's side to the destination, followed to a real outcome.

A 202 Accepted says only that the far end will try. A blind attempt
succeeds on a final 2xx sipfrag in a NOTIFY and nothing else; the AI's leg
is hung up only then. A REFER refused outright (403/405/489/501/603 and the
like: carriers that will not transfer), or a caller whose INVITE's Allow
leaves REFER out, is flagged ``refused_refer`` so the runner re-originates
as a bridge to the same destination at once; a failed or silent transfer
(no final NOTIFY within the timeout) goes to the handoff's fallback.
"""

from __future__ import annotations

from warmline.transfer.attempt import Attempt
from warmline.transfer.control import (
    CallerHungUp,
    ReferAnswered,
    ReferId,
    ReferNotified,
    TimerFired,
    TransferEvent,
)
from warmline.transfer.handoff import HANDOFF_HEADER, HandoffStatus
from warmline.transfer.identity import with_uri_header

REFER_REFUSALS = frozenset({403, 405, 420, 489, 501, 603})
NOTIFY_TIMER = "notify"
REPORT_GRACE = 4.0  # seconds a final NOTIFY is still awaited after the transferee hung up
UNSUBSCRIBED = "transferred (the transferee hung up; it sends no NOTIFY: Refer-Sub false)"


class BlindAttempt(Attempt):
    """REFER the caller's side to the destination and follow the NOTIFYs."""

    refer: ReferId | None = None
    unsubscribed = False  # accepted with Refer-Sub: false: no NOTIFY will come (RFC 4488)
    accepted = False  # the REFER got its 2xx
    caller_left = False  # the transferee ended our call before its final NOTIFY

    def start(self) -> None:
        control, handoff = self.control, self.handoff
        control.play_hold(control.caller)
        if control.caller_facts.allows_refer is False:  # it told us it cannot: do not try
            self.refused_refer = True
            self.fail("the caller's side does not allow REFER", 405)
            return
        target = with_uri_header(self.destination.uri, HANDOFF_HEADER, handoff.id)
        uui = dict(handoff.context_headers).get("User-to-User")
        if uui is not None:  # RFC 7434: UUI for the transferee's INVITE rides in Refer-To
            target = with_uri_header(target, "User-to-User", uui)
        self.refer = control.refer(control.caller, target, [(HANDOFF_HEADER, handoff.id)])
        control.set_timer(NOTIFY_TIMER, self.destination.timeout)

    def handle(self, event: TransferEvent) -> None:
        if self.finished:
            return  # a second final NOTIFY, a late 202: the outcome is already known
        match event:
            case ReferAnswered(refer=refer, status=status, subscribed=subscribed) \
                    if refer == self.refer:
                self.unsubscribed = not subscribed
                self._answered(status)
            case ReferNotified(refer=refer, status=status, final=final) if refer == self.refer:
                self._notified(status, final)
            case TimerFired(key=key) if key == NOTIFY_TIMER:
                if self.caller_left:
                    self.fail("caller hung up", None)
                else:
                    self.fail(f"no final NOTIFY within {self.destination.timeout:g} s", 408)
            case CallerHungUp() if self.unsubscribed:
                self._transferred_without_report()
            case CallerHungUp() if self.accepted:
                # RFC 5589 asks the transferee to report before hanging up, but the two
                # may cross: its subscription outlives the call (RFC 6665), so the final
                # NOTIFY is still waited for, until the timeout
                self.caller_left = True
                self.control.set_timer(NOTIFY_TIMER, REPORT_GRACE)
            case CallerHungUp():
                self.fail("caller hung up", None)

    def _answered(self, status: int) -> None:
        if 200 <= status < 300:
            self.accepted = True
            self.handoff.progress(HandoffStatus.ACCEPTED, sip_status=status)
        elif status >= 300:
            self.refused_refer = status in REFER_REFUSALS
            self.fail(f"REFER refused ({status})", status)

    def _notified(self, status: int, final: bool) -> None:
        if not final:
            if 180 <= status < 200:
                self.handoff.progress(HandoffStatus.RINGING, sip_status=status)
            return
        if not 200 <= status < 300:
            self.fail("caller hung up" if self.caller_left else f"transfer failed ({status})",
                      status)
            return
        self.succeed(f"the transferee reports {status}")
        if not self.caller_left:
            self.control.hang_up(self.control.caller)
        self.handoff.finish(HandoffStatus.COMPLETED, "transferred (REFER)", status)

    def _transferred_without_report(self) -> None:
        """Refer-Sub: false: the transferee ending our call within the timeout is the only
        sign the transfer went through; no BYE then (the caller's side already left)."""
        self.succeed("the transferee ended the original call")
        self.handoff.finish(HandoffStatus.COMPLETED, UNSUBSCRIBED, self.handoff.sip_status)

    def release(self) -> None:
        self.control.cancel_timer(NOTIFY_TIMER)

    def succeed(self, reason: str) -> None:
        self.control.cancel_timer(NOTIFY_TIMER)
        super().succeed(reason)
