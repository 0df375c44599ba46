"""A caller's call as warmline holds it: the caller's leg, the legs added to it, its state."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from warmline.calls.leg import CallLeg


class CallState(StrEnum):
    DIALING = "dialing"  # an outbound call: our INVITE is out, nothing heard yet
    RINGING = "ringing"  # an outbound call: the customer's phone rings (18x)
    AI = "ai"  # with the AI agent (also after a transfer that came back)
    TRANSFERRING = "transferring"
    HUMAN = "human"  # bridged to a human through warmline
    ENDED = "ended"


class Direction(StrEnum):
    INBOUND = "inbound"  # the caller called us
    OUTBOUND = "outbound"  # we called the customer (POST /calls, a callback due)


@dataclass(eq=False)
class Call:
    id: str
    caller: CallLeg
    started_at: float  # the shell's clock when the call arrived and was taken (monotonic)
    state: CallState = CallState.AI
    on_dtmf: Callable[[str], None] | None = None  # the agent's digit handler, while it has one
    legs: list[CallLeg] = field(default_factory=list)  # every leg, the caller's first
    handoff_ids: list[str] = field(default_factory=list)  # handoffs asked for, oldest first
    ended_at: float | None = None
    answered_at: float | None = None  # our 2xx went out (after early media, if any)
    # the caller's P-Asserted-Identity, kept only when it came from a trusted peer (RFC 3325)
    asserted_identity: str | None = None
    # opens this call's own routes (its media stream, turns, transfer) and nothing else:
    # what a bot is given instead of the API token (api/auth.py)
    token: str = field(default_factory=lambda: secrets.token_urlsafe(16), repr=False)
    started_wall: float = field(default_factory=time.time)  # the same moment, as Unix time
    hangup_requested: bool = False  # POST /calls/{id}/hangup came (the BYE may be out)
    # bumped by each agent stream that takes the call: an older stream (the first agent
    # after a handoff to another, the other agent after a return) sees it and stops
    agent_turn: int = 0
    # added to the next agent stream's start.customParameters, once (a return after a
    # handoff: why, and what the other agent reported)
    stream_parameters: dict[str, str] = field(default_factory=dict)
    direction: Direction = Direction.INBOUND  # outbound: ``caller`` is the customer we called
    adopted_from: str | None = None  # the dead node this call was taken over from
    taken_by: str | None = None  # the node that inherited it while our beats lapsed

    @property
    def ended(self) -> bool:
        return self.state is CallState.ENDED

    @property
    def caller_uri(self) -> str:
        return str(self.caller.session.remote_party.uri)

    def as_dict(self) -> dict[str, Any]:
        """The call as GET /calls lists it (and as the cluster shares it)."""
        session = self.caller.session
        return {"id": self.id, "from": self.caller_uri,
                "to": str(session.local_party.uri), "state": self.state.value,
                "started_at": self.started_wall, "answered": self.answered_at is not None,
                "direction": self.direction.value,
                "token": self.token,  # for its bot: opens this call's routes only
                "handoffs": list(self.handoff_ids)}


@dataclass(frozen=True, slots=True, eq=False)
class EndedCall:
    """What is kept of a call a few seconds after it ended, for the rest of the time
    GET /calls lists it: its listing and its token (its bot may still ask how it ended).

    The whole call (sessions, media legs, offer/answer, the transfer run: ~150 objects)
    goes as soon as nothing can still need it; a dict per call is what a busy node can
    afford to keep for minutes (at 300 calls a second, two minutes of whole calls held a
    gigabyte)."""

    id: str
    listing: dict[str, Any]  # as_dict() without its "handoffs", kept once as handoff_ids
    token: str = field(repr=False)
    ended_at: float  # the shell's clock
    handoff_ids: tuple[str, ...]

    @classmethod
    def of(cls, call: Call) -> EndedCall:
        assert call.ended_at is not None, "only an ended call is kept this way"
        listing = call.as_dict()
        del listing["handoffs"]
        return cls(call.id, listing, call.token, call.ended_at, tuple(call.handoff_ids))

    @property
    def ended(self) -> bool:
        return True

    def as_dict(self) -> dict[str, Any]:
        return {**self.listing, "handoffs": list(self.handoff_ids)}
