"""Redaction: what a caller reads out never leaves the engine."""

from __future__ import annotations

import pytest

from warmline.brain.redact import iban_valid, luhn_valid, mask_keys, redact, redact_value


@pytest.mark.parametrize(("said", "kept"), [
    ("my card is 4111 1111 1111 1111 thanks", "my card is [card number] thanks"),
    ("4111-1111-1111-1111", "[card number]"),
    ("number 5500005555555559", "number [card number]"),
    ("my social is 078-05-1120", "my social is [national id]"),
    ("the code is 482913", "the code is [code]"),
    ("my PIN: 4 4 2 1", "my PIN: [code]"),
    ("verification code was 12-34-56 I think", "verification code was [code] I think"),
    ("it is four two nine one one seven", "it is [digits]"),
    # cards: Visa, Mastercard, Amex (15 digits, 4-6-5), Discover; spaced, dashed, spoken
    ("visa 4111111111111111.", "visa [card number]."),
    ("mc 5555 5555 5555 4444, exp 12 26", "mc [card number], exp 12 26"),
    ("amex 3782 822463 10005", "amex [card number]"),
    ("amex 378282246310005", "amex [card number]"),
    ("discover 6011-1111-1111-1117", "discover [card number]"),
    ("4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1", "[card number]"),
    ("my card is 4111 1111 1111 1111 12 26", "my card is [card number] 12 26"),
    ("cards 4111 1111 1111 1111 5555 5555 5555 4444", "cards [card number] [card number]"),
    ("four one one one, one one one one, one one one one, one one one one", "[digits]"),
    # national ids
    ("ssn 078 05 1120", "ssn [national id]"),
    ("social security number is 078051120", "social security number is [national id]"),
    ("NI number QQ 12 34 56 C please", "NI number [national id] please"),
    ("nino qq123456c", "nino [national id]"),
    ("AB 12 34 56 D", "[national id]"),
    # IBANs, spaced or not, words after them kept
    ("pay GB82 WEST 1234 5698 7654 32 today", "pay [iban] today"),
    ("DE89 3704 0044 0532 0130 00", "[iban]"),
    ("iban de89370400440532013000.", "iban [iban]."),
    # codes, PINs, CVVs near their words; in digits or in words
    ("the CVV is 862", "the CVV is [code]"),
    ("cvc2: 1234", "cvc2: [code]"),
    ("security code 862", "security code [code]"),
    ("my pin number is seven three nine one", "my pin number is [code]"),
    ("one-time passcode 582 913", "one-time passcode [code]"),
    ("OTP: 582913", "OTP: [code]"),
    ("my password is hunter2 ok", "my password is [redacted] ok"),
    ("seven three nine one", "[digits]"),
])
def test_personal_data_is_replaced_by_what_it_was(said: str, kept: str) -> None:
    assert redact(said) == kept


@pytest.mark.parametrize("harmless", [
    "order 1234567890123 did not arrive",  # 13 digits failing Luhn: an order number
    "I paid 500 dollars on the 3rd",
    "call me at 555 0100",
    "",
    "Maria müller, straße 5",
    "order 4111111111111112 was late",  # 16 digits, one number, failing Luhn
    "ref 1234 5678 9012 3450 please",  # grouped, no span of it passing Luhn
    "call +15551234567 or sip:+15551234567@pbx.example",  # E.164: how calls are routed
    "sip:+4915123456789@carrier.example",  # 13 digits after +, Luhn-valid or not
    "at 10:30 I paid $1,234.56 for 3 items, 12 34 minutes",
    "my zip code is 94107 and the area code 415",
    "SIP error code 503, status code 486",
    "call-9f3c2a17be40d615 handoff-4111111111111111 handoff-e0f1a2ab123456c",  # ids stay
    "one or two people, three times",
    "the year 2024, room 1201, flight BA 0117",
    "GB82 WEST 1234 5698 7654 33",  # an IBAN's shape, wrong check digits
])
def test_ordinary_text_is_left_alone(harmless: str) -> None:
    assert redact(harmless) == harmless


def test_luhn() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")


def test_iban_check_digits() -> None:
    assert iban_valid("GB82 WEST 1234 5698 7654 32") and iban_valid("DE89370400440532013000")
    assert not iban_valid("GB82 WEST 1234 5698 7654 33") and not iban_valid("GB82")


def test_values_are_redacted_at_any_depth_and_routing_keys_kept() -> None:
    value = {"note": "card 4111 1111 1111 1111", "to": "sip:4111111111111111@pbx",
             "pin": 7391, "deep": [{"text": "ssn 078-05-1120"}, 4111111111111111, 12.5],
             "tuple": ("otp 582913",), "ok": True, "none": None, "count": 3}
    assert redact_value(value, frozenset({"to"})) == {
        "note": "card [card number]", "to": "sip:4111111111111111@pbx", "pin": "[redacted]",
        "deep": [{"text": "ssn [national id]"}, "[card number]", 12.5],
        "tuple": ["otp [code]"], "ok": True, "none": None, "count": 3}


@pytest.mark.parametrize(("keys", "shown"), [("0", "0"), ("12", "12"), ("7391", "4 keys"),
                                             ("6011111111111117", "16 keys")])
def test_keys_pressed_show_how_many_once_more_than_two(keys: str, shown: str) -> None:
    assert mask_keys(keys) == shown


def test_redaction_is_idempotent() -> None:
    said = "card 4111 1111 1111 1111, pin 7391, iban GB82 WEST 1234 5698 7654 32"
    assert redact(redact(said)) == redact(said)


@pytest.mark.parametrize(("key", "secret"), [
    ("pin", True), ("card_pin", True), ("cardPin", True), ("PIN", True), ("otp", True),
    ("passwd", True), ("cvv2", True), ("cardNumber", True), ("socialSecurity", True),
    ("api_token", True), ("iban", True), ("shipping", False), ("mapping", False),
    ("opinion", False), ("secretary", False), ("card_last4", False), ("name", False)])
def test_a_key_names_a_secret_as_a_word_of_its_own(key: str, secret: bool) -> None:
    for _ in range(2):  # the second time the answer is remembered
        assert (redact_value({key: "x"}) == {key: "[redacted]"}) is secret


def test_a_run_too_long_to_search_goes_whole() -> None:
    """A turn may hold 10,000 characters: a huge run of digits is not searched span by
    span (that took 0.1 s), it is replaced whole."""
    assert redact(" ".join("1" * 5000)) == "[digits]"
    assert redact(f"say {'7' * 70}.") == "say [digits]."
