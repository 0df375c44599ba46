"""One SIP session and its media: the session, a media leg and the leg's offer/answer.

Everything the far end may do to the media mid-call arrives here: a
re-INVITE or UPDATE with a new offer (hold, resume, a new address or codec)
is answered from the leg's :class:`Negotiation` and applied to the media
leg; an offer warmline cannot take gets 488 (or 400) with a Warning saying
why, and the call goes on as agreed before. A re-INVITE without SDP (a
session refresh asking for our offer) gets our current SDP. Digits from
the far end (RFC 4733 in the media, or SIP INFO) reach ``on_digit`` while
someone listens; nobody listening lets a bridged pair run compiled.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from warmline.media.negotiation import Negotiation
from warmline.media.plane import MediaLeg
from warmline.media.sdp import SdpError
from warmline.sip.session import RequestInDialog, Session
from warmline.sip.useragent import UserAgent

SDP = "application/sdp"


@dataclass(eq=False)
class CallLeg:
    session: Session
    media: MediaLeg
    negotiation: Negotiation
    _on_digit: Callable[[str], None] | None = None

    @property
    def on_digit(self) -> Callable[[str], None] | None:
        return self._on_digit

    @on_digit.setter
    def on_digit(self, handler: Callable[[str], None] | None) -> None:
        """Digits to ``handler`` (None: nobody listens; RFC 4733 events pass through)."""
        self._on_digit = handler
        self.media.on_dtmf = handler

    @property
    def codec(self) -> str | None:
        """The codec agreed on this leg, once there is one."""
        stream = self.negotiation.stream
        return stream.codec.name if stream is not None else None

    def digit(self, digit: str) -> None:
        """A digit that came by SIP INFO."""
        if self._on_digit is not None:
            self._on_digit(digit)

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
        self._on_digit = None
        self.media.close()


def _reason(status: int) -> str:
    return "Bad Request" if status == 400 else "Not Acceptable Here"


def quoted(text: str) -> str:
    """A reason fit for a quoted-string (RFC 3261 §25.1): no quotes, no line breaks."""
    return "".join(ch for ch in text if ch.isprintable() and ch not in '"\\')[:200]
