"""Redaction: what a caller reads out never leaves the engine."""

from __future__ import annotations

import pytest

from warmline.brain.redact import luhn_valid, redact


@pytest.mark.parametrize(("said", "kept"), [
    ("my card is 4111 1111 1111 1111 thanks", "my card is [card number] thanks"),
    ("4111-1111-1111-1111", "[card number]"),
    ("number 5500005555555559", "number [card number]"),
    ("my social is 078-05-1120", "my social is [national id]"),
    ("the code is 482913", "the code is [code]"),
    ("my PIN: 4 4 2 1", "my PIN: [code]"),
    ("verification code was 12-34-56 I think", "verification code was [code] I think"),
    ("it is four two nine one one seven", "it is [digits]"),
])
def test_personal_data_is_replaced_by_what_it_was(said: str, kept: str) -> None:
    assert redact(said) == kept


@pytest.mark.parametrize("harmless", [
    "order 1234567890123 did not arrive",  # 13 digits failing Luhn: an order number
    "I paid 500 dollars on the 3rd",
    "call me at 555 0100",
    "",
    "Maria müller, straße 5",
])
def test_ordinary_text_is_left_alone(harmless: str) -> None:
    assert redact(harmless) == harmless


def test_luhn() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
