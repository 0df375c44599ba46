"""Calls whose caller has gone quiet on the wire: no RTP and no RTCP for too long.

A caller's phone that lost power, a NAT binding that expired, or a scanner that
sent an INVITE and nothing else, all leave a call warmline still holds: ports,
a bot session, a line in the KPIs. RTCP keeps flowing even through silence
suppression (every few seconds), so a leg with neither for ``timeout`` seconds
is dead, and the call is ended with a BYE saying why (RFC 3326 Reason).

Not watched: a call still ringing (nothing is owed before the answer), and a
leg the caller has put on hold towards us (we agreed ``sendonly`` or
``inactive`` on our side of it: the caller sends nothing by design).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from warmline.calls.call import Call
from warmline.calls.leg import CallLeg

NO_MEDIA_REASON = 'SIP;cause=408;text="no RTP or RTCP from the caller for {seconds:g} s"'
_NOT_SENDING_TO_US = frozenset({"sendonly", "inactive"})  # our direction on the leg


class SilenceWatchdog:
    """Sweep now and then; ends (through ``hang_up``) calls silent past ``timeout``."""

    def __init__(self, timeout: float, hang_up: Callable[[Call, str], None]) -> None:
        self.timeout = timeout
        self.hang_up = hang_up
        self.ended = 0
        self._seen: dict[str, tuple[int, float]] = {}  # call id -> (activity, since)

    def sweep(self, calls: Iterable[Call], now: float) -> list[Call]:
        """Check each live call; returns the calls ended for silence this time."""
        ended, watched = [], set()
        for call in calls:
            if call.ended or call.answered_at is None or not _owes_media(call.caller):
                continue
            watched.add(call.id)
            counters = call.caller.media.counters
            activity = counters.received + counters.rtcp
            seen = self._seen.get(call.id)
            if seen is None or seen[0] != activity:
                self._seen[call.id] = (activity, now)
            elif now - seen[1] >= self.timeout:
                self.hang_up(call, NO_MEDIA_REASON.format(seconds=self.timeout))
                ended.append(call)
                watched.discard(call.id)
        self._seen = {key: value for key, value in self._seen.items() if key in watched}
        self.ended += len(ended)
        return ended


def _owes_media(leg: CallLeg) -> bool:
    stream = leg.negotiation.stream
    return stream is not None and stream.direction not in _NOT_SENDING_TO_US
