"""The context packet and its delivery: redacted, compact, within budget, never injectable."""

from __future__ import annotations

import json

import pytest

from warmline.brain.context import build_packet
from warmline.brain.delivery import (
    HeaderBudget,
    decode_uui,
    safe_value,
    sign,
    sip_headers,
    uui_digest,
)
from warmline.brain.triggers import Firing, TriggerConfig, TriggerState, evaluate
from warmline.brain.turns import Action, AuthState, Turn


def maria_turns() -> list[Turn]:
    return [
        Turn("ai", "Hello, how can I help?", 0.0, 1.5),
        Turn("caller", "Hi, it's Maria, I was charged twice on my bill", 2.0, 5.0,
             intent="billing_dispute", confidence=0.91, slots={"name": "Maria"}),
        Turn("ai", "Can you confirm your date of birth and postcode?", 5.5, 8.0),
        Turn("caller", "1980-04-02, postcode 90210, and my card is 4111 1111 1111 1111",
             8.5, 12.0, auth=AuthState(True, "dob+postcode", "full"),
             slots={"otp": "482913", "card_last4": "1111"}),
        Turn("ai", "Let me look up the refund.", 12.5, 14.0,
             actions=(Action("refund_lookup", "failed", "ledger timeout"),)),
        Turn("caller", "This is useless, I already told you, get me a human!", 15.0, 18.0,
             intent="billing_dispute", confidence=0.55),
    ]


def packet_for(turns: list[Turn]) -> dict[str, object]:
    state = TriggerState()
    firings: list[Firing] = []
    for index, turn in enumerate(turns):
        firings += evaluate(TriggerConfig(), state, turn, index)
    return build_packet(call_id="call-7", caller_number="sip:+15550100@carrier",
                        turns=turns, state=state, firing=firings[0], priority="high")


def test_the_packet_holds_the_five_elements_redacted() -> None:
    packet = packet_for(maria_turns())
    assert packet["version"] == "1.0"
    assert packet["caller"] == {"number": "sip:+15550100@carrier", "name": "Maria"}
    assert packet["authentication"] == {"verified": True, "method": "dob+postcode",
                                        "level": "full"}
    assert packet["intent"] == {"name": "billing_dispute", "confidence": 0.55}
    assert packet["summary"] == ("Maria, identity verified, billing dispute, annoyed, "
                                 "refund lookup already tried")
    assert packet["actions"] == [{"name": "refund_lookup", "result": "failed",
                                  "detail": "ledger timeout"}]
    assert packet["trigger"]["name"] == "explicit_request"  # type: ignore[index]
    text = json.dumps(packet)
    assert "4111 1111" not in text and "[card number]" in text and "482913" not in text
    assert packet["slots"] == {"otp": "[redacted]", "card_last4": "1111"}
    assert [line["speaker"] for line in packet["transcript"]] == ["ai", "caller"] * 3  # type: ignore[union-attr]


def test_headers_carry_a_digest_that_decodes_and_fits() -> None:
    packet = packet_for(maria_turns())
    headers = dict(sip_headers(packet, "handoff-9", "http://127.0.0.1:8080/handoffs/h?token=x"))
    assert headers["X-Warmline-Handoff"] == "handoff-9"
    assert headers["X-Warmline-Intent"] == "billing_dispute"
    assert headers["X-Warmline-Verified"] == "yes"
    digest = decode_uui(headers["User-to-User"])
    assert digest["h"] == "handoff-9" and digest["i"] == "billing_dispute" and digest["v"] == 1
    assert headers["User-to-User"].endswith(";encoding=hex;purpose=isdn-uui")
    assert headers["Call-Info"] == "<http://127.0.0.1:8080/handoffs/h?token=x>;purpose=info"
    assert all(len(value) <= 1024 for value in headers.values())


@pytest.mark.parametrize("limit", [24, 40, 64, 128, 256])
def test_the_uui_digest_drops_fields_to_fit(limit: int) -> None:
    digest = uui_digest(packet_for(maria_turns()), "handoff-9", limit)
    assert len(digest) <= limit and json.loads(digest)["h"] == "handoff-9"


def test_a_budget_too_small_for_the_id_is_a_config_error() -> None:
    with pytest.raises(ValueError, match=r"context\.uui_bytes"):
        uui_digest(packet_for(maria_turns()), "handoff-9", 8)


@pytest.mark.parametrize("hostile", [
    "billing\r\nBYE sip:victim SIP/2.0", "refund\nVia: forged", "nul\x00byte",
    "ünïcödé intent ✓", "x" * 5000, "100%\r\n",
])
def test_no_value_can_inject_or_overflow(hostile: str) -> None:
    turns = [Turn("caller", hostile, intent=hostile, confidence=0.1, slots={"name": hostile}),
             Turn("caller", "agent please", intent=hostile, confidence=0.1)]
    packet = packet_for(turns)
    budget = HeaderBudget(max_header=300, uui_bytes=100, max_total=1200)
    headers = sip_headers(packet, "handoff-1", "http://127.0.0.1/h/1\r\nX-Evil: 1", budget)
    for name, value in headers:
        assert all(" " <= ch <= "~" for ch in value), (name, value)
        assert len(value) <= 300
    assert sum(len(n) + len(v) + 4 for n, v in headers) <= 1200
    joined = "".join(value for _, value in headers)
    assert "\r" not in joined and "\n" not in joined and "\x00" not in joined


def test_safe_value_never_splits_an_escape() -> None:
    assert safe_value("a\r\nb", 10) == "a%0D%0Ab"
    assert safe_value("ab\r\n", 4) == "ab"  # "%0D" does not fit whole after "ab"
    assert safe_value("é", 5) == "" and safe_value("é", 6) == "%C3%A9"
    assert safe_value("50%", 10) == "50%25"  # a literal percent is escaped too
    assert safe_value("plain ASCII ~", 5) == "plain"  # nothing to escape: cut as it is
    assert safe_value("plain", -3) == "" == safe_value("é", -3)  # as the slow path cuts
    assert safe_value("tab\there", 20) == "tab%09here" and safe_value("\x7f", 3) == "%7F"


def test_webhook_signature_is_hmac_over_timestamp_and_body() -> None:
    signature = sign("s3cret", 1700000000, b'{"a":1}')
    assert signature.startswith("t=1700000000,v1=") and len(signature.split("v1=")[1]) == 64
    assert signature != sign("other", 1700000000, b'{"a":1}')


class BrokenSummarizer:
    def summarize(self, packet: dict[str, object], turns: list[Turn]) -> str:
        raise RuntimeError("model unavailable")


def test_a_failing_summarizer_falls_back_and_is_recorded() -> None:
    turns = maria_turns()
    state = TriggerState()
    for index, turn in enumerate(turns):
        evaluate(TriggerConfig(), state, turn, index)
    packet = build_packet(call_id="c", caller_number="n", turns=turns, state=state,
                          firing=None, summarizer=BrokenSummarizer())
    assert packet["summary"].startswith("Maria, identity verified")
    assert packet["summary_error"] == "RuntimeError: model unavailable"
