"""Personal data out of anything that leaves the engine: card numbers, national ids, codes.

A transcript handed to a human, a CRM webhook or a SIP header must not carry
what the caller read out to the AI: payment card numbers (13-19 digits,
spaced or dashed, checked with Luhn so order numbers survive), US social
security numbers and similar national ids, and one-time codes or PINs said
near words like "code", "PIN" or "password". Each is replaced by a label
that says what was there, so the human still knows it was given.
"""

from __future__ import annotations

import re

_CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
_SSN = re.compile(r"(?<!\d)\d{3}[- ]\d{2}[- ]\d{4}(?!\d)")
_CODE_WORDS = r"(?:code|otp|pin|passcode|password|verification|security number|cvv|cvc)"
_CODE = re.compile(rf"(?i)(\b{_CODE_WORDS}\b[^0-9\n]{{0,20}})(\d(?:[ -]?\d){{2,7}})(?!\d)")
_DIGIT_WORD = r"(?:zero|oh|one|two|three|four|five|six|seven|eight|nine)"
_SPELLED_DIGITS = re.compile(rf"(?i)\b(?:{_DIGIT_WORD}[ ,-]+){{5,}}{_DIGIT_WORD}\b")


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    return "[card number]" if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group(0)


def redact(text: str) -> str:
    """``text`` with card numbers, national ids, spoken digit strings and codes replaced."""
    text = _CARD.sub(_card, text)
    text = _SSN.sub("[national id]", text)
    text = _CODE.sub(lambda m: f"{m.group(1)}[code]", text)
    return _SPELLED_DIGITS.sub("[digits]", text)
