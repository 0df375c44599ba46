"""The SIP-only answerer: answers every call with G.711 and waits for the BYE.

What `warmline serve` runs without --http: a working SIP endpoint that real
peers (sipp, softphones) can call, with no media plane, no agent and no
transfers. It logs one line per call; the SIP benchmarks measure it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from warmline.media.basic_sdp import answer_audio, offer_audio
from warmline.sip.session import (
    CallConfirmed,
    CallEnded,
    CallFailed,
    IncomingCall,
    RequestInDialog,
    Session,
    SessionEvent,
)
from warmline.sip.useragent import UserAgent

log = logging.getLogger("warmline.calls")


class SipAnswerer:
    """Answers calls; media goes to one shared sink port (it plays and records nothing)."""

    def __init__(self, ua: UserAgent, clock: Callable[[], float], media_host: str,
                 media_port: int) -> None:
        self.ua = ua
        self.clock = clock
        self.media_host = media_host
        self.media_port = media_port
        self.calls_answered = 0
        self._version = 0

    def on_event(self, event: SessionEvent) -> None:
        now = self.clock()
        if isinstance(event, IncomingCall):
            self._answer(event.session, now)
        elif isinstance(event, CallConfirmed):
            event.session.app["confirmed_at"] = now
        elif isinstance(event, RequestInDialog):
            self._in_dialog(event, now)
        elif isinstance(event, CallEnded):
            self._log_end(event.session, "ended by " + ("caller" if event.by_remote else "us"),
                          now)
        elif isinstance(event, CallFailed):
            self._log_end(event.session, f"failed {event.status}", now)

    def _answer(self, session: Session, now: float) -> None:
        session.app["started_at"] = now
        sdp = self._sdp_for(session.remote_sdp)
        if sdp is None:
            self.ua.reject(session, 488, now, headers=[("Warning", '304 warmline "no G.711"')])
            self._log_end(session, "rejected 488 (no common codec)", now)
            return
        self.ua.answer(session, sdp, now)
        self.calls_answered += 1

    def _sdp_for(self, offer: bytes | None) -> bytes | None:
        self._version += 1
        if not offer:
            return offer_audio(self.media_host, self.media_port, self._version)
        return answer_audio(offer, self.media_host, self.media_port, self._version)

    def _in_dialog(self, event: RequestInDialog, now: float) -> None:
        request, session = event.request, event.session
        if request.method in ("INVITE", "UPDATE") and request.body:
            sdp = self._sdp_for(request.body)
            if sdp is None:
                self.ua.respond(event.transaction, 488, now, session=session)
            else:
                self.ua.respond(event.transaction, 200, now, session=session, body=sdp,
                                headers=[("Content-Type", "application/sdp")])
        elif request.method == "INVITE":
            self.ua.respond(event.transaction, 200, now, session=session,
                            body=session.local_sdp or b"")
        elif request.method == "REFER":
            self.ua.respond(event.transaction, 403, now, session=session,
                            reason="Forbidden (this endpoint does not transfer calls)")
        else:
            self.ua.respond(event.transaction, 200, now, session=session)

    def _log_end(self, session: Session, outcome: str, now: float) -> None:
        started = session.app.get("started_at", now)
        transport = session.flow.transport if session.flow else "udp"
        log.info("call %s %s -> %s over %s: %s after %.2f s", session.call_id,
                 session.remote_party.uri, session.local_party.uri, transport, outcome,
                 now - started)
