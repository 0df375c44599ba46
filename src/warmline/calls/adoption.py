"""Adopting the calls of a node that died, from what it left in the cluster.

A node writes each confirmed dialog of its calls to Redis as it happens
(cluster/takeover.py); when its beats stop, the first live node inherits them
and this module gives each call a new home here.

What is recovered, and how: every confirmed dialog. Its memo lets this node
send in it (Call-ID, tags, route set, a CSeq past anything sent before); a
re-INVITE with our Contact and a fresh media leg of ours moves both the far
end's signalling (a target refresh, RFC 3261 §12.2) and its RTP here. A caller
who was with the AI gets this node's agent anew (``stream_parameters`` say the
call was recovered); a caller bridged to a human is bridged again here. Either
way the call is listed by the API of every node under its old id and token,
can be hung up, and (with the AI) transferred; its records say where it came from.

What is not: what lived only in the dead process. The AI's conversation (a
WebSocket bot's session, a flow's place in its script); a transfer under way
(a human still ringing, a consult, a whisper): the human's confirmed leg of a
transfer not yet bridged is hung up with a Reason, a ringing one is the
PBX's to time out, and the caller goes back to the AI; a call not yet answered
(its caller retries). And the seconds between the death and the takeover (up
to three heartbeats): silence on the embedded relay, which died with the node
(on rtpengine with ``rtpengine_bridge`` a pair rtpengine already bridged keeps
talking, and is re-anchored here by the re-INVITE). A far end that requires
SRTP loses the call (our re-offer cannot carry the dead node's keys).
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from typing import Any

from warmline.calls.call import Call, CallState, Direction
from warmline.calls.leg import CallLeg
from warmline.calls.switchboard import Switchboard
from warmline.cluster.takeover import OrphanCall
from warmline.media.negotiation import Negotiation
from warmline.media.sdp import SdpError
from warmline.sip.dialog_memo import DialogMemo
from warmline.sip.errors import SipParseError
from warmline.sip.session import (
    CallEnded,
    CallFailed,
    InDialogResponse,
    Session,
    SessionEvent,
)

log = logging.getLogger("warmline.calls")
# Q.850 41: temporary failure (calling again may work)
LOST_REASON = 'Q.850;cause=41;text="warmline node lost; the transfer was cut short"'
SDP_VERSION_JUMP = 1000  # our re-offer must raise o= version past the dead node's last


@dataclass(frozen=True)
class InheritedLeg:
    """One dialog of an orphaned call, read back from its entry."""

    memo: DialogMemo
    role: str  # "caller" (the caller's leg) or "human" (a leg we dialled for a transfer)
    inbound: bool
    codec: str | None
    sdp_origin: tuple[int, int] | None  # our SDP's session id and version there
    anchor: str | None = None  # what of its media outlived the node (rtpengine's call)

    @classmethod
    def read(cls, entry: dict[str, Any]) -> InheritedLeg:
        """SipParseError when the entry is not one (written by another version, torn)."""
        try:
            memo = DialogMemo.from_json(str(entry["memo"]))
            sdp = entry.get("sdp")
            origin = (int(sdp[0]), int(sdp[1])) if isinstance(sdp, list) and len(sdp) == 2 \
                else None
            anchor = entry.get("anchor")
            return cls(memo, str(entry.get("role", "human")), bool(entry.get("inbound", True)),
                       str(entry["codec"]) if entry.get("codec") else None, origin,
                       str(anchor) if anchor else None)
        except (KeyError, TypeError, ValueError) as error:
            raise SipParseError(f"not a dialog entry: {error}") from None


class Adoption:
    """Takes orphaned calls into ``switchboard``: one re-INVITE per dialog kept."""

    def __init__(self, switchboard: Switchboard) -> None:
        self.switchboard = switchboard
        self.adopted = 0  # calls that live on here
        self.ended = 0  # dialogs that could not be kept, hung up

    async def adopt(self, orphan: OrphanCall) -> Call | None:
        """The call, live here, or None when nothing of it can go on (its dialogs ended)."""
        legs = self._read(orphan)
        caller = next((leg for leg in legs if leg.role == "caller"), None)
        humans = [leg for leg in legs if leg.role != "caller"]
        bridged = orphan.call.get("state") == CallState.HUMAN.value and len(humans) == 1
        if caller is None or not bridged:
            for human in humans:  # a transfer under way: its state died with the node
                self._end(human)
        if caller is None:
            return None
        if not self.switchboard.retire_ended(orphan.call_id):
            # live here already: ours (a dialog of it we hold); nothing to adopt
            log.warning("call %s from node %s is live on this node already", orphan.call_id,
                        orphan.node)
            return None
        kept = [caller, *humans] if bridged else [caller]
        call_legs = await self._open_all(orphan, kept)
        if call_legs is None:
            return None
        call = self._call(orphan, call_legs, bridged)
        for call_leg in call_legs:
            self.switchboard.take_leg(call, call_leg.session, call_leg,
                                      functools.partial(self._heard, call, call_leg))
            call_leg.session.app["adopting"] = True
        self.switchboard.add_call(call)
        if bridged:
            call_legs[0].media.route_to(call_legs[1].media)
            call_legs[1].media.route_to(call_legs[0].media)
        for call_leg in call_legs:
            # ours in the cluster at once: if this node dies before the re-INVITE is
            # answered, the next heir still finds the dialog (its CSeq moved on here)
            self.switchboard.keep_dialog(call_leg.session)
            self._move_here(call_leg)
        self.adopted += 1
        return call

    # -- inside ------------------------------------------------------------------------
    async def _open_all(self, orphan: OrphanCall,
                        kept: list[InheritedLeg]) -> list[CallLeg] | None:
        """Every kept dialog adopted with its media leg, or none: what was opened before a
        failure is undone (nothing was sent yet) and each dialog is hung up from its memo."""
        opened: list[CallLeg] = []
        try:
            for inherited in kept:
                opened.append(await self._open(inherited))
        except (OSError, ValueError, SdpError, SipParseError) as error:
            log.error("call %s from node %s cannot be adopted: %s", orphan.call_id,
                      orphan.node, error)
            for call_leg in opened:
                call_leg.media.close()
                self.switchboard.shell.run(functools.partial(self._unadopt, call_leg.session))
            for inherited in kept:
                self._end(inherited)
            return None
        return opened

    def _unadopt(self, session: Session, now: float) -> None:
        """Out of our UA again, without a word (its BYE from the memo follows)."""
        self.switchboard.shell.ua.let_go(session, now, "adoption failed")

    def _read(self, orphan: OrphanCall) -> list[InheritedLeg]:
        legs = []
        for entry in orphan.legs:
            try:
                legs.append(InheritedLeg.read(entry))
            except SipParseError as error:
                log.warning("call %s: a dialog of node %s's is unreadable: %s",
                            orphan.call_id, orphan.node, error)
        return legs

    async def _open(self, inherited: InheritedLeg) -> CallLeg:
        """A media leg here and the dialog adopted by our UA (nothing sent yet)."""
        board = self.switchboard
        media = await board.plane.open_leg(inherited.role)
        negotiation = Negotiation(media, board.media_address, board.codecs, board.srtp)
        if inherited.sdp_origin is not None:
            negotiation.session_id = inherited.sdp_origin[0]
            negotiation.version = inherited.sdp_origin[1] + SDP_VERSION_JUMP
        try:
            session = board.shell.ua.adopt(inherited.memo, inherited.inbound)
        except (SipParseError, ValueError):
            media.close()
            raise
        session.app["codec"] = inherited.codec
        session.app["anchor"] = inherited.anchor
        return CallLeg(session, media, negotiation)

    def _call(self, orphan: OrphanCall, legs: list[CallLeg], bridged: bool) -> Call:
        row, now = orphan.call, self.switchboard.shell.now()
        started_wall = float(row.get("started_at") or time.time())
        call = Call(orphan.call_id, legs[0], now - max(0.0, time.time() - started_wall),
                    state=CallState.HUMAN if bridged else CallState.AI, legs=list(legs),
                    handoff_ids=[str(h) for h in row.get("handoffs", [])],
                    answered_at=now, started_wall=started_wall,
                    direction=Direction(row.get("direction", Direction.INBOUND.value)),
                    adopted_from=orphan.node)
        if isinstance(row.get("token"), str):
            call.token = row["token"]  # the bot's and screen-pop links stay valid
        return call

    def _move_here(self, leg: CallLeg) -> None:
        """Re-INVITE with our Contact and our media: the far end's requests and RTP follow."""
        codec = leg.session.app.get("codec")
        board = self.switchboard
        codecs = [codec, *(c for c in board.codecs if c.lower() != codec.lower())] \
            if isinstance(codec, str) else None
        offer = leg.negotiation.offer(codecs=codecs)
        board.shell.run(lambda now: board.shell.ua.reinvite(leg.session, offer, now))

    def _heard(self, call: Call, leg: CallLeg, event: SessionEvent) -> None:
        if isinstance(event, InDialogResponse) and event.method == "INVITE":
            if leg.session.app.get("adopting"):  # later re-INVITEs are not the adoption's
                self._answered(call, leg, event)
        elif isinstance(event, CallEnded | CallFailed):
            for other in call.legs:  # a bridged pair: one side gone ends the other
                if other is not leg and not other.session.ended:
                    self.switchboard.hang_up(other)

    def _answered(self, call: Call, leg: CallLeg, event: InDialogResponse) -> None:
        response = event.response
        if response is not None and response.status < 200:
            return
        leg.session.app.pop("adopting", None)
        anchor = leg.session.app.pop("anchor", None)
        if isinstance(anchor, str):  # moved to our leg, or ending: the old anchor goes
            self.switchboard.plane.release(anchor)
        if response is None:  # timed out: the far end is gone too
            self.switchboard.hang_up(leg, LOST_REASON)
            return
        if not response.is_success:
            log.warning("call %s: the adopting re-INVITE got %d; hanging up", call.id,
                        response.status)
            self.switchboard.hang_up(leg, LOST_REASON)
            return
        try:
            leg.negotiation.accept(response.body)
        except SdpError as error:
            log.warning("call %s: adopted leg's answer unusable (%s); hanging up", call.id,
                        error.reason)
            self.switchboard.hang_up(leg, LOST_REASON)
            return
        self.switchboard.keep_dialog(leg.session)  # journaled with our Contact, for an heir

    def _end(self, inherited: InheritedLeg) -> None:
        """BYE a dialog that cannot go on (as after a crash, from its memo)."""
        self.ended += 1
        memo = inherited.memo
        board = self.switchboard
        if inherited.anchor is not None:
            board.plane.release(inherited.anchor)
        board.shell.run(lambda now: board.shell.ua.end_remembered(memo, now, LOST_REASON))
