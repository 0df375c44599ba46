"""HTTP Digest for SIP (RFC 3261 §22, RFC 2617, RFC 8760: MD5 and SHA-256, qop=auth).

The client answers a challenge; the server issues stateless nonces (a
timestamp signed with a secret) so that no per-challenge state is kept and a
forged or expired nonce is simply refused.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field

from warmline.sip.errors import SipParseError
from warmline.sip.headers import Challenge, parse_auth, quote_string
from warmline.sip.uri import parse_uri

_HASHES = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


def _digest(algorithm: str, text: str) -> str:
    return _HASHES[algorithm](text.encode()).hexdigest()


def _algorithm(params: dict[str, str]) -> str:
    algorithm = params.get("algorithm", "MD5").upper()
    if algorithm not in _HASHES:
        raise SipParseError(f"unsupported digest algorithm {algorithm}")
    return algorithm


def compute_response(
    *,
    algorithm: str,
    username: str,
    password: str,
    realm: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None,
    nc: str,
    cnonce: str,
) -> str:
    ha1 = _digest(algorithm, f"{username}:{realm}:{password}")
    ha2 = _digest(algorithm, f"{method}:{uri}")
    if qop:
        return _digest(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _digest(algorithm, f"{ha1}:{nonce}:{ha2}")


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str = field(repr=False)  # never in a log line or a traceback
    realm: str | None = None  # None: answer any realm


@dataclass(slots=True)
class DigestClient:
    """Answers 401/407 challenges, counting nonce uses (nc) per nonce."""

    credentials: list[Credentials]
    _counts: dict[str, int] = field(default_factory=dict)

    def find(self, realm: str) -> Credentials | None:
        """The account for ``realm``: one named for it first, else one for any realm."""
        exact = next((cred for cred in self.credentials if cred.realm == realm), None)
        return exact or next((cred for cred in self.credentials if cred.realm is None), None)

    def authorization(self, challenge_text: str, method: str, uri: str) -> str | None:
        """The Authorization value answering ``challenge_text``, or None if we have no creds."""
        challenge = parse_auth(challenge_text)
        if challenge.scheme.lower() != "digest":
            return None
        params = challenge.params
        realm = params.get("realm", "")
        cred = self.find(realm)
        if cred is None or "nonce" not in params:
            return None
        algorithm = _algorithm(params)
        qop = _choose_qop(params.get("qop"))
        nonce = params["nonce"]
        self._counts[nonce] = count = self._counts.get(nonce, 0) + 1
        nc = f"{count:08x}"
        cnonce = secrets.token_hex(8)
        response = compute_response(
            algorithm=algorithm, username=cred.username, password=cred.password, realm=realm,
            method=method, uri=uri, nonce=nonce, qop=qop, nc=nc, cnonce=cnonce,
        )
        fields = [
            f"username={quote_string(cred.username)}",
            f"realm={quote_string(realm)}",
            f"nonce={quote_string(nonce)}",
            f"uri={quote_string(uri)}",
            f"response={quote_string(response)}",
            f"algorithm={algorithm}",
        ]
        if "opaque" in params:
            fields.append(f"opaque={quote_string(params['opaque'])}")
        if qop:
            fields += [f"qop={qop}", f"nc={nc}", f"cnonce={quote_string(cnonce)}"]
        return "Digest " + ", ".join(fields)


def _choose_qop(offered: str | None) -> str | None:
    if offered is None:
        return None
    options = [item.strip() for item in offered.split(",")]
    if "auth" in options:
        return "auth"
    raise SipParseError(f"no supported qop in {offered!r}")


class DigestServer:
    """Challenges requests and verifies answers with stateless, signed, expiring nonces."""

    def __init__(
        self,
        realm: str,
        users: dict[str, str],
        *,
        algorithm: str = "SHA-256",
        nonce_lifetime: float = 300.0,
        secret: bytes | None = None,
    ) -> None:
        if algorithm not in _HASHES:
            raise ValueError(f"auth.algorithm: unsupported {algorithm!r} (MD5 or SHA-256)")
        self.realm = realm
        self.users = users
        self.algorithm = algorithm
        self.nonce_lifetime = nonce_lifetime
        self._secret = secret or secrets.token_bytes(32)
        self._counts: dict[str, int] = {}  # the last nonce count accepted, by nonce

    def challenge(self, now: float, *, stale: bool = False) -> str:
        stamp = f"{now:.3f}"
        signature = hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]
        nonce = f"{stamp}.{signature}"
        text = (
            f"Digest realm={quote_string(self.realm)}, nonce={quote_string(nonce)}, "
            f'algorithm={self.algorithm}, qop="auth"'
        )
        return text + (", stale=true" if stale else "")

    def verify(self, authorization: str, method: str, now: float,
               request_uri: object = None) -> tuple[bool, bool]:
        """Check an Authorization value: returns (accepted, nonce_was_stale).

        An answer is good for one request only: its ``uri`` must be this request's
        (parsed and compared, when ``request_uri`` is given) and its nonce count must
        grow (RFC 7616 §3.4.5), so an answer captured on the wire cannot be replayed
        from elsewhere, to another destination or a second time.
        """
        try:
            answer: Challenge = parse_auth(authorization)
        except SipParseError:
            return False, False
        params = answer.params
        nonce = params.get("nonce", "")
        fresh = self._nonce_age(nonce, now)
        if fresh is None:
            return False, False
        password = self.users.get(params.get("username", ""))
        if password is None or params.get("realm") != self.realm:
            return False, False
        try:
            algorithm = _algorithm(params)
        except SipParseError:
            return False, False
        expected = compute_response(
            algorithm=algorithm, username=params["username"], password=password,
            realm=self.realm, method=method, uri=params.get("uri", ""), nonce=nonce,
            qop=params.get("qop"), nc=params.get("nc", ""), cnonce=params.get("cnonce", ""),
        )
        if not hmac.compare_digest(expected, params.get("response", "")):
            return False, False
        if fresh > self.nonce_lifetime:
            return False, True
        if not _same_uri(params.get("uri", ""), request_uri) or not self._counted(
                nonce, params, now):
            return False, False
        return True, False

    def _counted(self, nonce: str, params: dict[str, str], now: float) -> bool:
        """qop=auth with a nonce count above the last one seen for this nonce."""
        if params.get("qop") != "auth":
            return False
        try:
            count = int(params.get("nc", ""), 16)
        except ValueError:
            return False
        if count <= self._counts.get(nonce, 0):
            return False
        if len(self._counts) >= 50_000:  # forget nonces past their lifetime
            self._counts = {known: seen for known, seen in self._counts.items()
                            if (self._nonce_age(known, now) or 1e18) <= self.nonce_lifetime}
        self._counts[nonce] = count
        return True

    def _nonce_age(self, nonce: str, now: float) -> float | None:
        """Seconds since this engine issued ``nonce``, or None if it did not issue it."""
        stamp, _, signature = nonce.rpartition(".")
        expected = hmac.new(self._secret, stamp.encode(), hashlib.sha256).hexdigest()[:32]
        if not stamp or not hmac.compare_digest(expected, signature):
            return None
        try:
            return now - float(stamp)
        except ValueError:
            return None


def _same_uri(answered: str, request_uri: object) -> bool:
    """Whether the digest's ``uri`` names the request's URI (True when none is given)."""
    if request_uri is None:
        return True
    try:
        return parse_uri(answered) == request_uri
    except SipParseError:
        return False
