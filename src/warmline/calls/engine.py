"""The call engine: SIP session events in, calls with media legs out.

It sits between the shell (which owns the sockets and runs the sans-IO UA)
and whoever drives the calls: an agent answering them, and later the
transfer logic. An inbound INVITE gets a relay leg and an SDP answer from
that leg's negotiation (488 with a Warning when nothing fits); every
re-INVITE or UPDATE is answered by the leg; INFO DTMF reaches the call's
digit handler; a hang-up closes the leg so no RTP socket outlives its call.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from warmline.calls.leg import CallLeg, quoted
from warmline.media.dtmf import DtmfError, parse_dtmf_relay
from warmline.media.negotiation import Negotiation
from warmline.media.relay import EmbeddedRelay
from warmline.media.sdp import SdpError
from warmline.sip.session import (
    CallEnded,
    CallFailed,
    IncomingCall,
    RequestInDialog,
    Session,
    SessionEvent,
)
from warmline.transport.shell import SipShell

log = logging.getLogger("warmline.calls")
_ids = itertools.count(1)


@dataclass(eq=False)
class Call:
    """A caller's call as warmline holds it: the caller's leg and what became of it."""

    id: str
    caller: CallLeg
    started_at: float
    state: str = "answered"  # answered -> ended
    on_dtmf: Callable[[str], None] | None = None
    legs: list[CallLeg] = field(default_factory=list)  # every leg, the caller's first

    @property
    def ended(self) -> bool:
        return self.state == "ended"


CallHandler = Callable[[Call], None]


class CallEngine:
    """Answers inbound calls on ``relay`` and keeps their legs' media in step with SIP."""

    def __init__(self, shell: SipShell, relay: EmbeddedRelay, media_address: str,
                 codecs: list[str], on_call: CallHandler | None = None) -> None:
        self.shell = shell
        self.relay = relay
        self.media_address = media_address
        self.codecs = codecs
        self.on_call = on_call or (lambda call: None)
        self.calls: dict[str, Call] = {}
        self._legs: dict[str, CallLeg] = {}  # by session id
        self._tasks: set[asyncio.Task[None]] = set()
        shell.on_event = self.on_event

    def on_event(self, event: SessionEvent) -> None:
        if isinstance(event, IncomingCall):
            self._spawn(self._answer(event.session))
        elif isinstance(event, RequestInDialog):
            self._in_dialog(event)
        elif isinstance(event, CallEnded | CallFailed):
            self._ended(event.session)

    def leg_of(self, session: Session) -> CallLeg | None:
        return self._legs.get(session.id)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for leg in list(self._legs.values()):
            leg.close()
        self._legs.clear()

    # ------------------------------------------------------------------ inbound
    async def _answer(self, session: Session) -> None:
        media = await self.relay.open_leg("caller")
        if session.ended:
            media.close()  # the caller gave up while the leg was being opened
            return
        negotiation = Negotiation(media, self.media_address, self.codecs)
        try:
            answer = negotiation.answer(session.remote_sdp or b"") if session.remote_sdp \
                else negotiation.offer()
        except SdpError as error:
            media.close()
            status, warning = error.status, f'305 warmline "{quoted(error.reason)}"'
            self.shell.run(lambda now: self.shell.ua.reject(
                session, status, now, headers=[("Warning", warning)]))
            log.info("call %s refused %d: %s", session.call_id, status, error.reason)
            return
        leg = CallLeg(session, media, negotiation)
        self._legs[session.id] = leg
        call = Call(f"call-{next(_ids)}", leg, self.shell.now(), legs=[leg])
        self.calls[call.id] = call
        session.app["call"] = call
        self.shell.run(lambda now: self.shell.ua.answer(session, answer, now))
        self.on_call(call)

    def _in_dialog(self, event: RequestInDialog) -> None:
        ua, leg, method = self.shell.ua, self.leg_of(event.session), event.request.method
        if leg is not None and method in ("INVITE", "UPDATE"):
            self.shell.run(lambda now: leg.renegotiate(ua, event, now))
        elif method == "INFO":
            self.shell.run(lambda now: ua.respond(event.transaction, 200, now,
                                                  session=event.session))
            self._info(event)
        elif method == "REFER":
            self.shell.run(lambda now: ua.respond(
                event.transaction, 403, now, session=event.session,
                reason="Forbidden (warmline transfers calls itself)"))
        else:
            self.shell.run(lambda now: ua.respond(event.transaction, 200, now,
                                                  session=event.session))

    def _info(self, event: RequestInDialog) -> None:
        call = event.session.app.get("call")
        content_type = (event.request.get("content-type") or "").lower()
        if not isinstance(call, Call) or call.on_dtmf is None or "dtmf-relay" not in content_type:
            return
        try:
            digit = parse_dtmf_relay(event.request.body)
        except DtmfError:
            return
        call.on_dtmf(digit)

    def _ended(self, session: Session) -> None:
        leg = self._legs.pop(session.id, None)
        if leg is not None:
            leg.close()
        call = session.app.get("call")
        if isinstance(call, Call) and call.caller is leg:
            call.state = "ended"

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
