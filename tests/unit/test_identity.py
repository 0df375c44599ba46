"""What the human's INVITE says about the caller: trusted identity only, signed identity
only with the caller's own number, privacy honoured (RFC 3325, 8224, 3323)."""

from __future__ import annotations

from warmline.transfer.handoff import CallerId, CallerIdMode
from warmline.transfer.identity import ANONYMOUS, identity_for

CALLER = '"Maria" <sip:+15550100@carrier.test>'
PASSPORT = "eyJhbGciOiJFUzI1NiJ9.eyJ.c2ln;info=<https://cert.test/a.pem>;alg=ES256;ppt=shaken"


def headers(mode: CallerIdMode, asserted: str | None = None, privacy: str | None = None,
            uri: str | None = None) -> tuple[str, dict[str, list[str]]]:
    made = identity_for(CallerId(mode, uri), CALLER, asserted, "sip:ai@warmline.test",
                        "sip:agent@pbx.test", (PASSPORT,), privacy)
    found: dict[str, list[str]] = {}
    for name, value in made.headers:
        found.setdefault(name, []).append(value)
    return made.from_, found


def test_the_original_caller_travels_with_their_signed_identity() -> None:
    from_, found = headers(CallerIdMode.ORIGINAL)
    assert from_ == CALLER and found["P-Asserted-Identity"] == [CALLER]
    assert found["Identity"] == [PASSPORT]  # copied as it came, never re-signed


def test_carrying_the_signed_identity_can_be_turned_off() -> None:
    made = identity_for(CallerId(CallerIdMode.ORIGINAL, identity=False), CALLER, None,
                        "sip:ai@warmline.test", "sip:agent@pbx.test", (PASSPORT,))
    assert made.from_ == CALLER and "Identity" not in dict(made.headers)


def test_a_trusted_assertion_is_passed_on_as_it_came() -> None:
    _, found = headers(CallerIdMode.ORIGINAL, asserted="<sip:+15550100@sbc.carrier.test>")
    assert found["P-Asserted-Identity"] == ["<sip:+15550100@sbc.carrier.test>"]


def test_a_trunk_number_carries_no_passport_for_someone_else() -> None:
    from_, found = headers(CallerIdMode.TRUNK, uri="sip:+15550199@trunk.test")
    assert from_ == "<sip:+15550199@trunk.test>" and "Identity" not in found
    assert found["X-Warmline-Original-Caller"] == [CALLER]


def test_a_caller_asking_for_privacy_is_anonymous_in_from() -> None:
    from_, found = headers(CallerIdMode.ORIGINAL, privacy="id")
    assert from_ == ANONYMOUS and found["Privacy"] == ["id"]
    assert found["P-Asserted-Identity"] == [CALLER]  # for the human's trusted side only
    plain, _ = headers(CallerIdMode.ORIGINAL, privacy="none")
    assert plain == CALLER
