"""Registering with a registrar (RFC 3261 §10): REGISTER, digest, refresh, back-off.

A carrier or PBX that sends calls to warmline finds it through a
registration. :class:`Registration` is a pure state machine: the UA asks it
for the next REGISTER, gives it every final response (or the timeout of the
transaction), and it says what happens next and when: refresh before the
binding expires, answer a challenge, retry with the registrar's Min-Expires,
or back off after a failure. A wrong password is a failure after two
challenges in a row, not a retry storm: the back-off grows from 30 s to 30
minutes, with jitter so that many trunks do not retry in step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from enum import Enum, StrEnum

from warmline.sip.auth import Credentials
from warmline.sip.errors import SipParseError
from warmline.sip.headers import NameAddr
from warmline.sip.message import Request, Response
from warmline.sip.uri import SipUri

MIN_BACKOFF = 30.0
MAX_BACKOFF = 1800.0
MAX_CHALLENGES = 2  # challenges in a row without a success: the credentials are wrong


class RegistrationState(StrEnum):
    UNREGISTERED = "unregistered"  # not yet, or removed on purpose
    REGISTERING = "registering"  # a REGISTER is out (first time, refresh or retry)
    REGISTERED = "registered"
    FAILED = "failed"  # the last attempt failed; the next one is at ``retry_at``


class Next(Enum):
    """What the UA does after a final response."""

    REFRESH = "refresh"  # registered: send again at ``refresh_at``
    RETRY_NOW = "retry now"  # a challenge to answer, or a Min-Expires to honour
    RETRY_LATER = "retry later"  # failed: send again at ``retry_at``
    DONE = "done"  # unregistered


@dataclass(eq=False)
class Registration:
    """One binding of ``contact`` for ``aor`` at ``registrar``."""

    name: str  # the trunk's name, for logs and the API
    registrar: SipUri  # the Request-URI (the registrar's domain)
    aor: SipUri  # To and From
    contact: NameAddr
    call_id: str
    tag: str
    expires: int = 600  # asked for; a 423 raises it
    credentials: Credentials | None = None
    headers: list[tuple[str, str]] = field(default_factory=list)  # a pre-loaded Route ...
    state: RegistrationState = RegistrationState.UNREGISTERED
    status: int | None = None  # the last final status (408 timeout, 503 transport error)
    reason: str = "not registered yet"
    granted: int | None = None  # what the registrar granted
    refresh_at: float | None = None
    retry_at: float | None = None
    failures: int = 0
    challenge: Response | None = None  # the last 401/407: every REGISTER answers it (nc+1)
    unregistering: bool = False
    _cseq: int = 0
    _challenges: int = 0
    _rng: random.Random = field(default_factory=random.Random)

    def request(self, max_forwards: int = 70) -> Request:
        """The next REGISTER (same Call-ID, a higher CSeq each time, RFC 3261 §10.2)."""
        self._cseq += 1
        self.state = RegistrationState.REGISTERING
        expires = 0 if self.unregistering else self.expires
        return Request("REGISTER", self.registrar, [
            ("Max-Forwards", str(max_forwards)),
            ("From", str(NameAddr(self.aor).with_tag(self.tag))),
            ("To", str(NameAddr(self.aor))),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self._cseq} REGISTER"),
            ("Contact", str(self.contact)),
            ("Expires", str(expires)),
            *self.headers,
        ])

    def answered(self, response: Response, now: float) -> Next:
        """The final response to our REGISTER: what next.

        A challenge is kept and answered in every later REGISTER (a refresh is
        then one round trip); a stale nonce costs one more challenge.
        """
        self.status = response.status
        if response.status in (401, 407):
            return self._challenged(response, now)
        self._challenges = 0
        if response.is_success:
            return self._accepted(response, now)
        if response.status == 423:
            return self._too_brief(response, now)
        return self.failed(response.status, f"{response.status} {response.reason}", now)

    def failed(self, status: int, reason: str, now: float) -> Next:
        """No usable answer (a timeout, a transport error, a refusal): back off."""
        self.status, self.reason = status, reason
        self.state, self.granted, self.refresh_at = RegistrationState.FAILED, None, None
        self.failures += 1
        delay = min(MIN_BACKOFF * 2 ** (self.failures - 1), MAX_BACKOFF)
        self.retry_at = now + delay * self._rng.uniform(0.8, 1.0)
        return Next.RETRY_LATER

    def _accepted(self, response: Response, now: float) -> Next:
        self.failures, self.retry_at = 0, None
        if self.unregistering:
            self.state, self.reason, self.granted = (RegistrationState.UNREGISTERED,
                                                     "unregistered", None)
            return Next.DONE
        granted = self._granted(response)
        if granted <= 0:
            return self.failed(response.status, "the registrar kept no binding for us", now)
        self.state, self.granted, self.reason = RegistrationState.REGISTERED, granted, "ok"
        self.refresh_at = now + granted - min(60.0, granted / 2)
        return Next.REFRESH

    def _granted(self, response: Response) -> int:
        """The binding's lifetime: our Contact's expires param, else Expires, else asked."""
        try:
            for bound in response.contacts:
                expires = bound.param("expires")
                if _same_contact(bound, self.contact) and expires and expires.isdigit():
                    return int(expires)
            return response.expires if response.expires is not None else self.expires
        except SipParseError:
            return self.expires

    def _challenged(self, response: Response, now: float) -> Next:
        self._challenges += 1
        if self.credentials is None:
            return self.failed(response.status, f"{response.status}: no credentials for this "
                                                f"registrar", now)
        if self._challenges > MAX_CHALLENGES:
            self._challenges = 0
            return self.failed(response.status, f"authentication failed ({response.status}): "
                                                f"check the username and password", now)
        self.challenge = response
        return Next.RETRY_NOW

    def _too_brief(self, response: Response, now: float) -> Next:
        value = response.get("min-expires") or ""
        if not value.strip().isdigit() or int(value) <= self.expires:
            return self.failed(423, "423 Interval Too Brief without a usable Min-Expires", now)
        self.expires = int(value)
        return Next.RETRY_NOW


def _same_contact(bound: NameAddr, ours: NameAddr) -> bool:
    mine, theirs = ours.uri, bound.uri
    if not isinstance(mine, SipUri) or not isinstance(theirs, SipUri):
        return False
    return (mine.user, mine.bare_host.lower(), mine.port) == \
        (theirs.user, theirs.bare_host.lower(), theirs.port)
