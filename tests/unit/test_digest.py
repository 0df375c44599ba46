"""Digest arithmetic against published vectors, and the stateless server nonces."""

from __future__ import annotations

from warmline.sip.auth import Credentials, DigestClient, DigestServer, compute_response
from warmline.sip.headers import parse_auth

RFC7616 = {
    "username": "Mufasa", "password": "Circle of Life", "realm": "http-auth@example.org",
    "method": "GET", "uri": "/dir/index.html",
    "nonce": "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", "qop": "auth", "nc": "00000001",
    "cnonce": "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
}


def test_rfc7616_md5_vector() -> None:
    assert compute_response(algorithm="MD5", **RFC7616) == "8ca523f5e9506fed4657c9700eebdbec"


def test_rfc7616_sha256_vector() -> None:
    assert compute_response(algorithm="SHA-256", **RFC7616) == (
        "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"
    )


def test_rfc2617_md5_vector() -> None:
    assert compute_response(
        algorithm="MD5", username="Mufasa", password="Circle Of Life", realm="testrealm@host.com",
        method="GET", uri="/dir/index.html", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
        qop="auth", nc="00000001", cnonce="0a4f113b",
    ) == "6629fae49393a05397450978507c4ef1"


def test_client_answer_is_accepted_and_counts_nonce_uses() -> None:
    server = DigestServer("pbx", {"ai": "pw"}, algorithm="MD5")
    client = DigestClient([Credentials("ai", "pw")])
    challenge = server.challenge(now=100.0)
    first = client.authorization(challenge, "INVITE", "sip:h@pbx")
    second = client.authorization(challenge, "INVITE", "sip:h@pbx")
    assert first is not None and second is not None
    assert parse_auth(first).params["nc"] == "00000001"
    assert parse_auth(second).params["nc"] == "00000002"
    assert server.verify(first, "INVITE", now=101.0) == (True, False)


def test_server_refuses_forged_wrong_and_stale_answers() -> None:
    server = DigestServer("pbx", {"ai": "pw"}, nonce_lifetime=30)
    other = DigestServer("pbx", {"ai": "pw"})
    good = DigestClient([Credentials("ai", "pw")])
    bad = DigestClient([Credentials("ai", "nope")])
    challenge = server.challenge(now=0.0)
    assert server.verify(bad.authorization(challenge, "INVITE", "sip:x") or "", "INVITE", 1.0) == (
        False, False)
    forged = other.challenge(now=0.0)
    answer = good.authorization(forged, "INVITE", "sip:x") or ""
    assert server.verify(answer, "INVITE", 1.0) == (False, False)
    late = good.authorization(challenge, "INVITE", "sip:x") or ""
    assert server.verify(late, "INVITE", 100.0) == (False, True)
    assert server.verify("garbage", "INVITE", 1.0) == (False, False)


def test_an_answer_cannot_be_replayed_or_moved_to_another_uri() -> None:
    from warmline.sip.uri import parse_uri

    server = DigestServer("pbx", {"ai": "pw"})
    client = DigestClient([Credentials("ai", "pw")])
    challenge = server.challenge(now=0.0)
    first = client.authorization(challenge, "INVITE", "sip:agent@pbx") or ""
    target = parse_uri("sip:agent@pbx")
    assert server.verify(first, "INVITE", 1.0, target) == (True, False)
    assert server.verify(first, "INVITE", 2.0, target) == (False, False)  # replayed: same nc
    second = client.authorization(challenge, "INVITE", "sip:agent@pbx") or ""
    elsewhere = parse_uri("sip:+19005550100@pbx")
    assert server.verify(second, "INVITE", 3.0, elsewhere) == (False, False)  # another target
    assert server.verify(second, "INVITE", 3.0, target) == (True, False)  # nc 2 > 1: good
