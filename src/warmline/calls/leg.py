"""One SIP session and its media: the session, a relay leg and the leg's offer/answer.

Everything the far end may do to the media mid-call arrives here: a
re-INVITE or UPDATE with a new offer (hold, resume, a new address or codec)
is answered from the leg's :class:`Negotiation` and applied to the relay
leg; an offer warmline cannot take gets 488 (or 400) with a Warning saying
why, and the call goes on as agreed before. A re-INVITE without SDP (a
session refresh asking for our offer) gets our current SDP.
"""

from __future__ import annotations

from dataclasses import dataclass

from warmline.media.negotiation import Negotiation
from warmline.media.relay import RelayLeg
from warmline.media.sdp import SdpError
from warmline.sip.session import RequestInDialog, Session
from warmline.sip.useragent import UserAgent

SDP = "application/sdp"


@dataclass(eq=False)
class CallLeg:
    session: Session
    media: RelayLeg
    negotiation: Negotiation

    def renegotiate(self, ua: UserAgent, event: RequestInDialog, now: float) -> None:
        """Answer a re-INVITE or UPDATE (with or without an offer)."""
        request = event.request
        if not request.body:
            ua.respond(event.transaction, 200, now, session=self.session,
                       headers=[("Content-Type", SDP)], body=self.session.local_sdp or b"")
            return
        try:
            answer = self.negotiation.answer(request.body)
        except SdpError as error:
            ua.respond(event.transaction, error.status, now, session=self.session,
                       reason=_reason(error.status),
                       headers=[("Warning", f'305 warmline "{quoted(error.reason)}"')])
            return
        self.session.local_sdp = answer
        ua.respond(event.transaction, 200, now, session=self.session,
                   headers=[("Content-Type", SDP)], body=answer)

    def close(self) -> None:
        self.media.close()


def _reason(status: int) -> str:
    return "Bad Request" if status == 400 else "Not Acceptable Here"


def quoted(text: str) -> str:
    """A reason fit for a quoted-string (RFC 3261 §25.1): no quotes, no line breaks."""
    return "".join(ch for ch in text if ch.isprintable() and ch not in '"\\')[:200]
