"""Transfers on live calls: one handoff at a time per call, each run by its chain.

The checks every transfer request passes (the call exists, is live, is not
being transferred, unless another agent it was handed to has it and hands it
on, and is not with a human already) and the wiring of a
:class:`HandoffRun` to the call's :class:`LiveCallControl`: the events of
the call go to its latest run, so a run that has ended never hears about a
later one's legs.
"""

from __future__ import annotations

from collections.abc import Callable

from warmline.calls.call import Call, CallState
from warmline.calls.switchboard import Switchboard
from warmline.transfer.handoff import Handoff, HandoffError, Problem
from warmline.transfer.live import LiveCallControl, TransferServices
from warmline.transfer.runner import RETURN_ANNOUNCEMENT, HandoffRun

ReturnHandler = Callable[[Call, str, float], None]  # call, why, seconds away from the AI


class Transfers:
    """Runs handoffs on the calls of ``switchboard``."""

    def __init__(self, switchboard: Switchboard, services: TransferServices,
                 returned: ReturnHandler) -> None:
        self.switchboard = switchboard
        self.services = services
        self.returned = returned
        # said to a caller coming back to the AI after a failed transfer (None: nothing)
        self.return_announcement: str | None = RETURN_ANNOUNCEMENT
        self._runs: dict[str, HandoffRun] = {}  # the latest run, by call id
        self._controls: dict[str, LiveCallControl] = {}

    def check(self, call: Call) -> None:
        """HandoffError (CONFLICT) when ``call`` cannot take a transfer now."""
        if call.ended:
            raise HandoffError(f"call {call.id} has ended", Problem.CONFLICT)
        run = self._runs.get(call.id)
        if run is not None and not run.handoff.ended and not run.agent_has_the_call:
            raise HandoffError(f"call {call.id} is already being transferred "
                               f"({run.handoff.id})", Problem.CONFLICT)
        if call.state is CallState.HUMAN:
            raise HandoffError(f"call {call.id} is with a human already", Problem.CONFLICT)

    def start(self, call: Call, handoff: Handoff) -> None:
        """Run ``handoff`` on ``call`` (checked with :meth:`check` first)."""
        control = self._control(call)
        earlier = self._runs.get(call.id)
        if earlier is not None and earlier.agent_has_the_call:  # it hands the call on
            earlier.hand_on(handoff)
        run = HandoffRun(control, handoff, lambda why, away: self.returned(call, why, away),
                         self.return_announcement)
        self._runs[call.id] = run
        control.sink = run.handle
        run.start()

    def caller_left(self, call: Call) -> None:
        control = self._controls.get(call.id)
        if control is not None:
            control.caller_hung_up()

    def forget(self, call: Call) -> None:
        """The call is long over: let its run and control go, untied from each other (the
        run holds the control, whose sink is the run's; the run and its attempt hold each
        other) so that reference counting frees them with the call."""
        run = self._runs.pop(call.id, None)
        control = self._controls.pop(call.id, None)
        if control is not None:
            control.release()
        if run is not None:
            run.release()

    async def close(self) -> None:
        for control in list(self._controls.values()):
            await control.close()

    def _control(self, call: Call) -> LiveCallControl:
        control = self._controls.get(call.id)
        if control is None:
            control = self._controls[call.id] = LiveCallControl(self.switchboard, call,
                                                                self.services)
        return control
