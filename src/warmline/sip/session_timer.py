"""RFC 4028 session timers: how long a call may go without a refresh before it is over.

Without them, a call whose other end died (a crashed process, a lost network)
stays up forever at the far end: the human is "on a call" nobody is in. With
them, one side (the refresher) sends a re-INVITE or UPDATE every half interval,
and the other side hangs up (BYE) when no refresh came in time; so when
warmline dies, the phones it bridged end their legs themselves.

This module is the negotiation alone, pure: what a request offers, what our
2xx answers, what a 2xx grants us, and when to act. The UA core runs the
timers and sends the requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from warmline.sip.errors import SipParseError
from warmline.sip.headers import parse_header_params
from warmline.sip.message import Request, Response
from warmline.sip.uri import is_digits, param_value

MIN_SE_FLOOR = 90  # RFC 4028 §4: no Min-SE below 90 s
BYE_MARGIN = 32.0  # §10: BYE at expiry minus min(32 s, interval / 3)


class Refresher(StrEnum):
    UAC = "uac"
    UAS = "uas"


@dataclass(frozen=True, slots=True)
class SessionTimerSettings:
    """What we ask for and accept; ``interval`` 0 turns session timers off."""

    interval: int = 1800  # the Session-Expires we offer
    min_se: int = MIN_SE_FLOOR  # the shortest we accept (422 below it)

    @property
    def enabled(self) -> bool:
        return self.interval > 0


@dataclass(frozen=True, slots=True)
class Agreement:
    """A session timer in force: its interval, and whether we are the ones refreshing."""

    interval: int
    we_refresh: bool

    def refresh_after(self) -> float:
        """The refresher sends its refresh at half the interval (§10)."""
        return self.interval / 2

    def expire_after(self) -> float:
        """The other side sends BYE when no refresh has come by then (§10)."""
        return self.interval - min(BYE_MARGIN, self.interval / 3)


class TooBrief(Exception):
    """The offered Session-Expires is below our Min-SE: answer 422 with ``min_se``."""

    def __init__(self, min_se: int) -> None:
        super().__init__(f"Session Interval Too Small (Min-SE {min_se})")
        self.min_se = min_se


def offered(message: Request | Response) -> tuple[int, Refresher | None] | None:
    """The Session-Expires a message carries (delta-seconds, refresher), or None.

    SipParseError (answered 400 for a request) when it is not a number or names
    a refresher other than uac/uas.
    """
    text = message.get("session-expires")
    if text is None:
        return None
    value, _, params_text = text.strip().partition(";")
    value = value.strip()
    if not is_digits(value) or not 0 < int(value) < 2**31:
        raise SipParseError(f"Session-Expires {text!r} is not a number of seconds")
    params = parse_header_params(";" + params_text) if params_text else ()
    refresher = param_value(params, "refresher")
    if refresher is not None and refresher.lower() not in ("uac", "uas"):
        raise SipParseError(f"Session-Expires refresher {refresher!r} is not uac or uas")
    return int(value), Refresher(refresher.lower()) if refresher else None


def min_se_of(message: Request | Response) -> int:
    """The Min-SE a message carries (RFC 4028 §5), at least the 90 s floor."""
    text = (message.get("min-se") or "").partition(";")[0].strip()
    return max(int(text), MIN_SE_FLOOR) if is_digits(text) else MIN_SE_FLOOR


def request_headers(settings: SessionTimerSettings, interval: int | None = None,
                    refresher: Refresher | None = None) -> list[tuple[str, str]]:
    """What an INVITE (or a refresh) of ours carries: Session-Expires and Min-SE."""
    if not settings.enabled:
        return []
    value = str(interval or settings.interval)
    if refresher is not None:
        value += f";refresher={refresher.value}"
    return [("Session-Expires", value), ("Min-SE", str(settings.min_se))]


def as_uas(request: Request, settings: SessionTimerSettings) -> tuple[Agreement | None,
                                                               list[tuple[str, str]]]:
    """The timer our 2xx to ``request`` sets up, and the headers that say so (§9).

    TooBrief when the request asks for less than our Min-SE; SipParseError for a
    malformed Session-Expires. A request without one still gets a timer, so a
    dead caller's leg is never kept forever. Unless the request names the
    refresher, we are it: a far end that refreshes only gives up on us after its
    refresh times out (PJSIP: 107 s at a 90 s interval), while one that waits for
    our refreshes hangs up at the interval.
    """
    if not settings.enabled:
        return None, []
    asked = offered(request)
    uac_supports = "timer" in _tokens(request, "supported")
    if asked is None:
        interval, refresher = settings.interval, Refresher.UAS
    else:
        interval, wanted = asked
        if interval < settings.min_se:
            raise TooBrief(settings.min_se)
        refresher = wanted or Refresher.UAS
        if refresher is Refresher.UAC and not uac_supports:
            refresher = Refresher.UAS
    headers = [("Session-Expires", f"{interval};refresher={refresher.value}")]
    if refresher is Refresher.UAC:
        headers.append(("Require", "timer"))
    return Agreement(interval, refresher is Refresher.UAS), headers


def as_uac(response: Response) -> Agreement | None:
    """The timer a 2xx to our INVITE (or refresh) grants (§7.2); None: no expiry at all."""
    try:
        granted = offered(response)
    except SipParseError:
        return None
    if granted is None:
        return None
    interval, refresher = granted
    return Agreement(interval, refresher is not Refresher.UAS)


def _tokens(request: Request, name: str) -> list[str]:
    try:
        return [token.lower() for token in request.values(name)]
    except SipParseError:
        return []
