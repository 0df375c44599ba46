"""The REGISTER client against a scripted registrar on a fake clock: digest, refresh, 423,
back-off, a wrong password without a retry storm, and removal."""

from __future__ import annotations

import random

from warmline.sip.auth import Credentials, DigestServer
from warmline.sip.events import Target
from warmline.sip.message import Request, Response, parse_message
from warmline.sip.registration import RegistrationState
from warmline.sip.session import ProbeResult, RegistrationChanged
from warmline.sip.useragent import UserAgent

REGISTRAR = Target("udp", "127.0.0.1", 5090)
ACCOUNT = Credentials("warmline", "s3cret", "pbx.test")


class Registrar:
    """Answers each REGISTER the UA sends with what the test scripts."""

    def __init__(self, password: str = "s3cret", min_expires: int | None = None) -> None:
        self.digest = DigestServer("pbx.test", {"warmline": password}, algorithm="MD5")
        self.min_expires = min_expires
        self.seen: list[Request] = []

    def answer(self, ua: UserAgent, now: float, status: int | None = None) -> Response:
        [sent] = ua.pop_transmissions()
        request = parse_message(sent.data)
        assert isinstance(request, Request) and sent.target == REGISTRAR
        self.seen.append(request)
        response = self.decide(request, now, status)
        ua.receive(response.to_bytes(), REGISTRAR, now)
        return response

    def decide(self, request: Request, now: float, status: int | None) -> Response:
        base = [(n, v) for n, v in request.headers
                if n in ("via", "from", "to", "call-id", "cseq")]
        expires = request.expires or 0
        if status is not None:
            return Response(status, headers=base)
        authorization = request.get("authorization")
        if authorization is None or not self.digest.verify(authorization, "REGISTER", now)[0]:
            return Response(401, headers=[*base, ("WWW-Authenticate",
                                                  self.digest.challenge(now))])
        if self.min_expires and 0 < expires < self.min_expires:
            return Response(423, headers=[*base, ("Min-Expires", str(self.min_expires))])
        contact = f"{request.get('contact')};expires={min(expires, 120)}" if expires else ""
        return Response(200, headers=[*base, *([("Contact", contact)] if contact else [])])


def agent() -> UserAgent:
    ua = UserAgent(rng=random.Random(7))
    ua.add_listener("udp", "127.0.0.1", 5070)
    return ua


def states(ua: UserAgent) -> list[RegistrationState]:
    return [e.registration.state for e in ua.pop_events() if isinstance(e, RegistrationChanged)]


def test_registers_answering_the_challenge_and_refreshes_before_expiry() -> None:
    ua, registrar = agent(), Registrar()
    registration = ua.register("sip:pbx.test", "sip:warmline@pbx.test", 0.0, name="carrier",
                               target=REGISTRAR, credentials=ACCOUNT)
    registrar.answer(ua, 0.0)  # 401
    registrar.answer(ua, 0.0)  # 200, granted 120 s
    assert registration.state is RegistrationState.REGISTERED and registration.granted == 120
    assert states(ua)[-1] is RegistrationState.REGISTERED
    first, second = registrar.seen
    assert first.call_id == second.call_id and second.cseq.seq == first.cseq.seq + 1
    assert second.get("authorization") and second.get("expires") == "600"
    assert second.contacts[0].sip_uri.user == "warmline"
    ua.handle_timer(59.0)
    assert not ua.pop_transmissions()
    assert ua.next_deadline() == 60.0  # refreshed a minute before the 120 s run out
    ua.handle_timer(60.0)
    registrar.answer(ua, 60.0)  # the refresh answers the kept challenge: one round trip
    assert registration.state is RegistrationState.REGISTERED and len(registrar.seen) == 3
    assert "nc=00000002" in (registrar.seen[-1].get("authorization") or "")


def test_a_wrong_password_fails_clearly_and_backs_off_instead_of_retrying() -> None:
    ua, registrar = agent(), Registrar(password="other")
    registration = ua.register("sip:pbx.test", "sip:warmline@pbx.test", 0.0,
                               target=REGISTRAR, credentials=ACCOUNT)
    for _ in range(3):
        registrar.answer(ua, 0.0)
    assert registration.state is RegistrationState.FAILED and registration.status == 401
    assert "authentication failed" in registration.reason
    assert not ua.pop_transmissions()  # no storm: the next try waits
    first_retry = registration.retry_at
    assert first_retry is not None and 24.0 <= first_retry <= 30.0
    ua.handle_timer(first_retry)
    for _ in range(3):
        registrar.answer(ua, first_retry)
    assert registration.failures == 2 and registration.retry_at is not None
    assert registration.retry_at - first_retry >= 48.0  # the back-off doubles


def test_423_interval_too_brief_is_retried_with_min_expires() -> None:
    ua, registrar = agent(), Registrar(min_expires=1800)
    registration = ua.register("sip:pbx.test", "sip:warmline@pbx.test", 0.0, expires=300,
                               target=REGISTRAR, credentials=ACCOUNT)
    registrar.answer(ua, 0.0)
    assert registrar.answer(ua, 0.0).status == 423
    registrar.answer(ua, 0.0)  # with Min-Expires, and the credentials again
    assert registrar.seen[-1].get("expires") == "1800"
    assert registration.state is RegistrationState.REGISTERED


def test_refusals_and_silence_fail_with_the_reason() -> None:
    ua, registrar = agent(), Registrar()
    registration = ua.register("sip:pbx.test", "sip:warmline@pbx.test", 0.0,
                               target=REGISTRAR, credentials=ACCOUNT)
    registrar.answer(ua, 0.0, status=403)
    assert (registration.state, registration.status) == (RegistrationState.FAILED, 403)
    assert registration.reason == "403 Forbidden"
    at = registration.retry_at or 0.0
    ua.handle_timer(at)
    ua.pop_transmissions()  # the registrar stays silent now
    ua.handle_timer(at + 33.0)  # Timer F
    assert registration.status == 408 and registration.reason == "the registrar did not answer"


def test_unregistering_removes_the_binding_and_stops_refreshing() -> None:
    ua, registrar = agent(), Registrar()
    registration = ua.register("sip:pbx.test", "sip:warmline@pbx.test", 0.0,
                               target=REGISTRAR, credentials=ACCOUNT)
    registrar.answer(ua, 0.0)
    registrar.answer(ua, 0.0)
    ua.unregister(registration, 1.0)
    registrar.answer(ua, 1.0)
    assert registrar.seen[-1].get("expires") == "0"
    assert registration.state is RegistrationState.UNREGISTERED and not ua.registrations
    ua.handle_timer(500.0)
    assert not ua.pop_transmissions()


def test_a_probe_answers_one_challenge_with_the_trunk_credentials() -> None:
    ua, registrar = agent(), Registrar()
    probe = ua.probe("sip:pbx.test", 0.0, target=REGISTRAR, credentials=ACCOUNT)
    for _ in range(2):
        [sent] = ua.pop_transmissions()
        request = parse_message(sent.data)
        assert isinstance(request, Request)
        base = [(n, v) for n, v in request.headers
                if n in ("via", "from", "to", "call-id", "cseq")]
        authorization = request.get("authorization")
        ok = authorization and registrar.digest.verify(authorization, "OPTIONS", 0.0)[0]
        response = Response(200, headers=[*base, ("Allow", "INVITE, REFER")]) if ok else \
            Response(401, headers=[*base, ("WWW-Authenticate", registrar.digest.challenge(0.0))])
        ua.receive(response.to_bytes(), REGISTRAR, 0.0)
    [result] = [e for e in ua.pop_events() if isinstance(e, ProbeResult)]
    assert result.status == 200 and probe.response is not None
    assert probe.response.get("allow") == "INVITE, REFER"


def test_a_probe_through_an_outbound_proxy_carries_the_pre_loaded_route() -> None:
    ua = agent()
    ua.probe("sip:pbx.test", 0.0, target=REGISTRAR,
             headers=[("Route", "<sip:edge.pbx.test;lr>")])
    [sent] = ua.pop_transmissions()
    request = parse_message(sent.data)
    assert isinstance(request, Request) and request.get("route") == "<sip:edge.pbx.test;lr>"
