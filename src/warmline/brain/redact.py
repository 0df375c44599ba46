"""Personal data out of anything that leaves the engine: card numbers, national ids, codes.

A transcript handed to a human, a CRM webhook, a SIP header, a log line or
a record must not carry what the caller read out to the AI: payment card
numbers (13-19 digits, spaced or dashed, checked with Luhn so order numbers
survive), IBANs (checked with their mod-97 digits), US social security
numbers, UK National Insurance numbers, one-time codes, PINs, CVVs and
passwords said near the word that announces them, and runs of four or more
spoken digit words. Each is replaced by a label that says what was there, so the
human still knows it was given.

What is left alone on purpose: a number after ``+`` (an E.164 phone number,
which is how calls are routed), digits inside a word or an id
(``call-9f3c...``), times, amounts, and order numbers that fail Luhn.
Prechecks made of plain string operations (six digits in a row once spaces
and dashes are gone; one of the words a code or a spoken number needs) let
ordinary text through without running the patterns, which keeps this cheap
enough to run on every log record (logs.py, bench/log_redaction.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

CARD = "[card number]"
IBAN = "[iban]"
NATIONAL_ID = "[national id]"
CODE = "[code]"
DIGITS = "[digits]"
SECRET = "[redacted]"

_DIGIT_WORD = r"(?:zero|oh|one|two|three|four|five|six|seven|eight|nine)"
# the prechecks, plain string operations (a regex costs microseconds a line): the digit
# patterns need six digits in a row once spaces and dashes are gone, the rest a word
_ZEROS = bytes.maketrans(b"0123456789", b"0" * 10)
_PHONE = re.compile(rb"\+0+")
_CODE_HINTS = ("code", "otp", "pin", "pass", "verif", "secur", "cvv", "cvc", "csc", "ssn",
               "social")
_DIGIT_WORDS = ("zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight",
                "nine")
_ANY_WORD = re.compile("|".join(_CODE_HINTS + _DIGIT_WORDS))  # one scan for the usual "no"

# country, check digits, then groups of four (spaced or not) and a shorter last one
_IBAN = re.compile(r"(?i)(?<![\w-])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
# a run of 13 or more digits, single spaces or dashes between; not after "+" (a phone)
# nor inside a word or an id ("call-" and hex digits)
_CARD_RUN = re.compile(r"(?<![\w+-])\d(?:[ -]?\d){12,}(?!\w)")
_SEPARATOR = re.compile(r"([ -])")
_LONGEST_RUN = 64  # digits searched for cards span by span; a longer run goes whole
_SSN = re.compile(r"(?<![\w+-])\d{3}[- ]\d{2}[- ]\d{4}(?!\w)")
# HMRC's rules for the prefix letters, plus QQ (the prefix of its published examples)
_NINO = re.compile(r"(?i)(?<![\w-])(?:QQ|[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]) ?\d{2} ?\d{2} ?"
                   r"\d{2} ?[A-D](?![\w-])")
_NOT_A_SECRET_CODE = "".join(f"(?<!{word} )" for word in (
    "zip", "area", "post", "postal", "error", "status", "response", "reason", "country",
    "dialing", "dialling", "promo", "discount"))
_CODE_WORDS = (rf"(?:{_NOT_A_SECRET_CODE}code|otp|pin|passcode|password|verification|"
               r"security number|cvv2?|cvc2?|csc|ssn|social security(?: number)?|social)")
_CODE = re.compile(
    rf"(?i)(\b{_CODE_WORDS}\b[^0-9\n]{{0,20}}?)"
    rf"(\d(?:[ -]?\d){{2,11}}(?!\d)|\b{_DIGIT_WORD}(?:[ ,-]+{_DIGIT_WORD}){{2,11}}\b)")
_NATIONAL_WORDS = re.compile(r"(?i)ssn|social")
_PASSWORD = re.compile(r"(?i)(\b(?:password|passphrase|passcode)\s*(?:is|was|:)\s*)(\S+)")
# four digit words in a row: said one by one, digits are a number read out (a PIN at least)
_SPELLED_DIGITS = re.compile(rf"(?i)\b(?:{_DIGIT_WORD}[ ,-]+){{3,}}{_DIGIT_WORD}\b")
_NON_DIGIT = re.compile(r"\D")

# a key that names a secret (its value goes whatever it looks like), as a word of the key:
# "pin", "card_pin", "cardPin", "PIN" are; "shipping" and "mapping" are not
SECRET_KEY = re.compile(
    r"(?:(?<![A-Za-z])|(?<=[a-z])(?=[A-Z]))(?i:pins?|otp|passw\w*|passcode|passphrase|"
    r"secrets?|cvv2?|cvc2?|csc|card_?number|ssn|social\w*|national_?id|security_?answer|"
    r"tokens?|iban|nino)(?![a-z])")


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    """ISO 13616: 15-34 characters whose mod-97 check (country and digits moved last) is 1."""
    compact = text.replace(" ", "").upper()
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _iban(match: re.Match[str]) -> str:
    """The IBAN, or the longest prefix of whole groups that is one (words may follow it)."""
    whole = match.group(0)
    text = whole
    while len(text) >= 15:
        if iban_valid(text):
            return IBAN + whole[len(text):]
        if " " not in text:
            break
        text = text.rsplit(" ", 1)[0]
    return whole


def _card(match: re.Match[str]) -> str:
    """A Luhn-valid run as a whole, else each Luhn-valid span of whole groups within it.

    Spoken numbers run on ("4111 1111 1111 1111 12 26" with the expiry), so a run
    that fails as a whole is searched group by group; one unbroken run that
    fails Luhn is an order or reference number and stays. A run too long to
    search cheaply goes whole.
    """
    run = match.group(0)
    digits = _NON_DIGIT.sub("", run)
    if len(digits) <= 19 and luhn_valid(digits):
        return CARD
    if len(digits) > _LONGEST_RUN:
        return DIGITS  # nobody says that many digits but to read something out
    parts = _SEPARATOR.split(run)  # groups at even indexes, their separators between
    groups = parts[0::2]
    out: list[str] = []
    index = 0
    while index < len(groups):
        end = _card_span(groups, index)
        if end is None:
            out.append(groups[index])
            index += 1
        else:
            out.append(CARD)
            index = end
        if index < len(groups):
            out.append(parts[2 * index - 1])
    return "".join(out)


def _card_span(groups: list[str], start: int) -> int | None:
    """The end (exclusive) of the longest Luhn-valid span of 13-19 digits from ``start``."""
    found = None
    digits = ""
    for end in range(start, len(groups)):
        digits += groups[end]
        if len(digits) > 19:
            break
        if len(digits) >= 13 and luhn_valid(digits):
            found = end + 1
    return found


def _code(match: re.Match[str]) -> str:
    """The announcing words kept, the code replaced (a social security number is an id)."""
    label = NATIONAL_ID if _NATIONAL_WORDS.search(match.group(1)) else CODE
    return match.group(1) + label


def redact(text: str) -> str:
    """``text`` with card numbers, IBANs, national ids, codes and spoken digits replaced."""
    lower = text.lower()
    if _six_digits_close(text):
        text = _IBAN.sub(_iban, text)
        text = _CARD_RUN.sub(_card, text)
        text = _SSN.sub(NATIONAL_ID, text)
        text = _NINO.sub(NATIONAL_ID, text)
    if _ANY_WORD.search(lower) is None:
        return text
    if any(hint in lower for hint in _CODE_HINTS):
        text = _CODE.sub(_code, text)
        if "pass" in lower:
            text = _PASSWORD.sub(lambda m: f"{m.group(1)}{SECRET}", text)
    if sum(lower.count(word) for word in _DIGIT_WORDS) >= 4:
        text = _SPELLED_DIGITS.sub(DIGITS, text)
    return text


def _six_digits_close(text: str) -> bool:
    """Whether six digits follow one another, spaces and dashes aside and not after "+"
    (a superset of where a card, an IBAN or a national id can be; the patterns are
    what costs). Non-ASCII text is always checked."""
    if not text.isascii():
        return True
    zeros = text.encode().translate(_ZEROS)
    if b"+0" in zeros:
        zeros = _PHONE.sub(b"+", zeros)  # "+15551234567" routes a call: never a secret
    return b"000000" in zeros.translate(None, b" -")


def redact_value(value: Any, keep: frozenset[str] = frozenset()) -> Any:
    """Every string inside ``value`` redacted (slots, evidence, REST context can hold
    anything the caller said), at any depth.

    Values under secret-sounding keys (pin, otp, password, cvv, card number,
    ssn, iban...) go entirely; integers are checked as card numbers too. Keys
    in ``keep`` hold values the engine routes by (a destination URI) and pass
    unchanged.
    """
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, bool) or value is None or isinstance(value, float):
        return value
    if isinstance(value, int):
        text = redact(str(value))
        return value if text == str(value) else text
    if isinstance(value, Mapping):
        return {key: item if key in keep else SECRET if _secret_key(key)
                else redact_value(item, keep) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(item, keep) for item in value]
    return redact(str(value))


def _secret_key(key: object) -> bool:
    """Whether values under ``key`` go whole (SECRET_KEY). Every record event asks this of
    the same few field names: the answers are remembered, in a table cleared when full."""
    name = str(key)
    known = _SECRET_KEYS.get(name)
    if known is None:
        if len(_SECRET_KEYS) >= 1024:
            _SECRET_KEYS.clear()
        known = _SECRET_KEYS[name] = SECRET_KEY.search(name) is not None
    return known


_SECRET_KEYS: dict[str, bool] = {}


def mask_keys(dtmf: str) -> str:
    """Keys the caller pressed, as shown: one or two (a menu choice, 0 for a person) as
    they are, more (a PIN, a card number keyed in) only as how many."""
    return dtmf if len(dtmf) <= 2 else f"{len(dtmf)} keys"
