"""Bridge transfer: warmline calls the human itself and bridges the media on answer.

The re-origination carriers need when they will not do REFER. The caller
hears ringback while the human's phone rings; the INVITE carries the
context headers and the caller's identity; the ring timeout CANCELs.
Whatever fails, the caller stays with warmline for the next fallback.
"""

from __future__ import annotations

from warmline.transfer.attempt import Attempt, Runner
from warmline.transfer.control import CallControl, CallerHungUp, LegEnded, LegId, TransferEvent
from warmline.transfer.dialing import HumanDial
from warmline.transfer.handoff import Destination, Handoff


class BridgeAttempt(Attempt):
    """Call the destination from warmline and bridge the two legs on answer."""

    def __init__(self, control: CallControl, handoff: Handoff, destination: Destination,
                 runner: Runner) -> None:
        super().__init__(control, handoff, destination, runner)
        self.dial = HumanDial(control, handoff, destination, self.bridge, self.fail)

    @property
    def human(self) -> LegId | None:
        return self.dial.leg

    def start(self) -> None:
        self.control.play_ringback(self.control.caller)
        self.dial.start()

    def handle(self, event: TransferEvent) -> None:
        if self.bridged:
            self.handle_bridged(event)
        elif self.finished or self.dial.handle(event):
            return
        elif isinstance(event, LegEnded) and event.leg == self.human:
            self.fail("the destination hung up before the connection", None)
        elif isinstance(event, CallerHungUp):
            self.fail("caller hung up", None)

    def release(self) -> None:
        self.dial.give_up()
