"""What the caller reads out, or an AI writes into a transfer, never leaves the engine.

A corpus of card numbers (Visa, Mastercard, Amex, Discover; spaced, dashed,
spoken), a US social security number, a UK National Insurance number, two
IBANs and a PIN, a one-time code and a CVV goes in by the real doors of a
real CallEngine over its FastAPI app: turns posted to /calls/{id}/turns, the
last of which fires a trigger, and a POST /calls/{id}/transfer whose context
(nested), whispers and announcement carry them. No sockets: the calls are
stand-ins and the transfers run on tests/unit/fake_control.py.

Then everything that leaves is read: the log at DEBUG, triggers.jsonl, the
records, the human's INVITE headers (User-to-User decoded), the webhook body,
the screen-pop and every other API answer, and what is spoken (whisper,
announcement). None may hold any of the secrets, in any spacing; the labels
that replace them, and the routing numbers, must still be there.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import unquote

import pytest
from fastapi.testclient import TestClient

import warmline.brain.service as brain_service
from tests.unit.fake_control import SPEECH, FakeCallControl, start
from warmline import logs
from warmline.api import build_app
from warmline.brain.calibration import TriggerLog
from warmline.brain.context import build_packet
from warmline.brain.delivery import WebhookResult, decode_uui
from warmline.brain.redact import redact
from warmline.brain.triggers import Firing, TriggerConfig, TriggerState, evaluate
from warmline.brain.turns import Turn
from warmline.calls.call import Call
from warmline.engine import CallEngine
from warmline.media.relay import EmbeddedRelay, PortRange
from warmline.sip.useragent import UserAgent
from warmline.transfer.control import (
    LegAnswered,
    LegEnded,
    LegProgress,
    SpeechReady,
    WebhookDone,
    WebhookKind,
)
from warmline.transfer.handoff import Acceptance, Destination, Handoff, TransferMode
from warmline.transport.shell import SipShell

VISA, MASTERCARD = "4111 1111 1111 1111", "5555-5555-5555-4444"
AMEX, DISCOVER = "3782 822463 10005", "6011111111111117"
SSN, NINO = "078-05-1120", "QQ 12 34 56 C"
IBAN_GB, IBAN_DE = "GB82 WEST 1234 5698 7654 32", "DE89 3704 0044 0532 0130 00"
PIN, OTP, CVV = "7391", "582913", "862"
SPOKEN_VISA = "four one one one one one one one one one one one one one one one"
SPOKEN_PIN = "seven three nine one"
LONG = [VISA, MASTERCARD, AMEX, DISCOVER, SSN, NINO, IBAN_GB, IBAN_DE]
SHORT = [PIN, OTP, CVV]
HUMAN = "sip:+15551234567@127.0.0.1:5090"  # a routing number: it must survive
OTHER_HUMAN = "sip:+15557654321@127.0.0.1:5091"

TURNS: list[dict[str, Any]] = [
    {"speaker": "ai", "text": "Hello, this is the billing assistant."},
    {"speaker": "caller", "text": f"Hi, I'm Maria. My card is {VISA}, the CVV is {CVV}.",
     "intent": "billing_dispute", "confidence": 0.9,
     "slots": {"name": "Maria", "card": VISA, "pin": PIN,
               "account": {"iban": IBAN_GB, "note": f"backup card {MASTERCARD}"}}},
    {"speaker": "caller", "text": f"My social is {SSN} and my NI number is {NINO}.",
     "auth": {"verified": True, "method": f"otp {OTP}"}},
    {"speaker": "ai", "text": f"Paying to {IBAN_DE}, the one-time code is {OTP}.",
     "actions": [{"name": "refund_lookup", "result": "failed",
                  "detail": f"card {AMEX} declined"}]},
    {"speaker": "caller", "text": f"Again: {SPOKEN_VISA}, and my pin is {SPOKEN_PIN}."},
    *({"speaker": "caller", "dtmf": digit} for digit in PIN),  # a PIN keyed in, key by key
]
ASK = {"speaker": "caller", "intent": "billing_dispute", "confidence": 0.8,
       "text": f"This is useless, get me a human. My Discover is {DISCOVER}, PIN {PIN}."}
TRANSFER: dict[str, Any] = {
    "to": HUMAN, "mode": "warm", "whisper": f"Card {AMEX}, PIN {PIN}",
    "announce": f"I have noted your card {VISA}; transferring you now.",
    "fallback": [{"to": OTHER_HUMAN, "mode": "warm", "whisper": f"IBAN {IBAN_GB}"}, "ai"],
    "context": {"summary": f"Caller read card {VISA} and SSN {SSN}",
                "customer": {"ids": [NINO, IBAN_DE], "pin": PIN,
                             "notes": [f"otp {OTP}", f"cvv {CVV}", SPOKEN_PIN]},
                "card_number": MASTERCARD, "numbers": [int(DISCOVER)]},
}


# -- finding a secret in any spacing -------------------------------------------------------
def _compact(text: str) -> str:
    return re.sub(r"[^A-Z0-9]", "", text.upper())


def _spread(secret: str) -> re.Pattern[str]:
    """``secret``'s characters with up to three separators between, not inside a number."""
    gap = r"[\s,\-_/:;\"'|]{0,3}"
    return re.compile(r"(?<![A-Za-z0-9.])" + gap.join(map(re.escape, _compact(secret)))
                      + r"(?![A-Za-z0-9])")


def leaks(text: str) -> list[str]:
    """The secrets found in ``text``: long ones whatever the separators, short ones (a PIN)
    as a number of their own, spoken ones as the same words."""
    found = [secret for secret in LONG if _compact(secret) in _compact(text)]
    found += [secret for secret in SHORT if _spread(secret).search(text)]
    words = re.sub(r"[^a-z]+", " ", text.lower())
    found += [spoken for spoken in (SPOKEN_VISA, SPOKEN_PIN) if spoken in words]
    return found


def test_the_finder_finds_every_secret_however_spaced() -> None:
    """The check below must be able to fail: each secret, respaced, is found."""
    for secret in LONG + SHORT:
        digits = _compact(secret)
        for respaced in (secret, digits, " ".join(digits), "-".join(digits),
                         json.dumps({"x": " ".join(digits)})):
            assert leaks(f"said {respaced}.") == [secret], respaced
    assert leaks(f"Again: {SPOKEN_VISA.upper()}") == [SPOKEN_VISA]
    assert not leaks("call-9f3c2a17be40d615 at 1712345678.7391 took 0.862 s, port 5090")


# -- a CallEngine with stand-in calls ------------------------------------------------------
class Records:
    """Stands in for RecordWriter: keeps each event (and reads healthy to /metrics)."""

    pending = journal_failures = lost = 0
    writable = True

    def __init__(self) -> None:
        self.events: list[Any] = []

    def add(self, event: Any) -> None:
        self.events.append(event)


def stand_in_call(call_id: str) -> Call:
    """A call answered and with the AI, with just what the engine reads of its SIP leg."""
    session = SimpleNamespace(
        dialog=object(), ended=False,
        remote_party=SimpleNamespace(uri="sip:+15550100@carrier.example"),
        local_party=SimpleNamespace(uri="sip:ai@127.0.0.1:5070"))
    return Call(call_id, SimpleNamespace(session=session, media=SilentMedia()),  # type: ignore[arg-type]
                started_at=0.0)


class SilentMedia:
    """The caller's media leg as far as a recording uses it: audio played at once, a tap
    taken and given back (the API's recording routes run on stand-in calls too)."""

    def play(self, player: Any) -> Any:
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return SimpleNamespace(done=done)

    def capture(self, tap: Any) -> None:
        self.tap = tap


@dataclass
class Rig:
    """A real CallEngine whose transfers run on fake calls, and what it wrote."""

    engine: CallEngine
    records: Records
    controls: dict[str, FakeCallControl]  # by handoff id


@pytest.fixture
def rig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    loop = asyncio.new_event_loop()  # SipShell wants one at construction, nothing more
    records = Records()

    async def build() -> CallEngine:
        return CallEngine(SipShell(UserAgent()), EmbeddedRelay("127.0.0.1", PortRange(
            40000, 40010)), "127.0.0.1", ["PCMU"], records_dir=tmp_path / "records",
            records=records)  # type: ignore[arg-type]

    engine = loop.run_until_complete(build())
    built = Rig(engine, records, {})

    def run_on_a_fake_call(call: Call, handoff: Handoff) -> None:
        built.controls[handoff.id] = start(handoff)[0]

    monkeypatch.setattr(engine.transfers, "start", run_on_a_fake_call)
    for call_id in ("call-pii-1", "call-pii-2"):
        engine.calls[call_id] = stand_in_call(call_id)
    policy = engine.escalation
    policy.destination = Destination(HUMAN, TransferMode.WARM, 20, accept=Acceptance.NONE)
    policy.webhook_url, policy.public_url = "http://desk.example/hook", "http://127.0.0.1:8080"
    yield built
    loop.close()


def webhook_bodies(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The bodies the brain would POST to the desk (nothing leaves the machine)."""
    sent: list[dict[str, Any]] = []

    async def send(url: str, secret: str, packet: dict[str, Any],
                   timeout: float) -> WebhookResult:
        sent.append(json.loads(json.dumps(packet)))
        return WebhookResult(True, 200, "OK", 0.01)

    monkeypatch.setattr(brain_service, "send_webhook", send)
    return sent


def run_warm(rig: Rig, handoff_id: str, announced: bool = False) -> FakeCallControl:
    """Drive the fake call: (the announcement,) then for each human in the chain the
    webhook done, the phone rings and answers, the human hears the whisper and hangs up."""
    control = rig.controls[handoff_id]
    if announced:
        control.feed(SpeechReady("announce", None))
    while len(control.did("webhook")) > len(control.did("dial")):
        control.feed(WebhookDone(WebhookKind.WEBHOOK, True))
        human = control.last("dial")[1]
        control.feed(LegProgress(human, 180), SpeechReady("whisper", SPEECH),
                     LegAnswered(human, 200), LegEnded(human))
    assert rig.engine.handoffs[handoff_id].ended
    return control


def what_the_human_got(control: FakeCallControl) -> list[str]:
    """Every INVITE's headers, percent-decoded and the User-to-User digest decoded, and
    every text spoken (whisper, announcement)."""
    out: list[str] = []
    for _, _, uri, _, headers in control.did("dial"):
        out.append(uri)
        for name, value in headers:
            out.append(f"{name}: {unquote(value)}")
            if name == "User-to-User":
                out.append(json.dumps(decode_uui(value)))
    out += [text for _, _, text in control.did("synthesize")]
    return out


# -- the test ------------------------------------------------------------------------------
def test_no_secret_reaches_a_log_a_record_a_header_or_the_screen_pop(
        rig: Rig, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = rig.engine
    caplog.set_level(logging.DEBUG)
    bodies = webhook_bodies(monkeypatch)
    seen: dict[str, list[str]] = {}
    with TestClient(build_app(engine)) as api:
        for turn in TURNS:
            answer = api.post("/calls/call-pii-1/turns", json=turn)
            assert answer.status_code == 201 and answer.json()["fired"] == [], answer.text
        fired = api.post("/calls/call-pii-1/turns", json=ASK)
        assert fired.status_code == 201
        assert [f["trigger"] for f in fired.json()["fired"]] == ["explicit_request"]
        triggered = fired.json()["handoff_id"]
        asked = api.post("/calls/call-pii-2/transfer", json=TRANSFER)
        assert asked.status_code == 202, asked.text
        requested = asked.json()["handoff_id"]
        for handoff_id in (triggered, requested):
            asyncio.run(engine.brain.deliver(engine.handoffs[handoff_id], WebhookKind.WEBHOOK))
        seen["human"] = what_the_human_got(run_warm(rig, triggered))
        seen["human"] += what_the_human_got(run_warm(rig, requested, announced=True))
        seen["api"] = [fired.text, asked.text, api.get("/calls").text,
                       api.get("/handoffs").text]
        for handoff_id in (triggered, requested):
            token = engine.handoffs[handoff_id].token
            seen["api"] += [api.get(f"/handoffs/{handoff_id}").text,
                            api.get(f"/handoffs/{handoff_id}/context?token={token}").text]
    seen["log"] = [caplog.text]
    seen["triggers.jsonl"] = [(engine.records_dir / "triggers.jsonl").read_text()]
    seen["records"] = [json.dumps([vars(event) for event in rig.records.events], default=str)]
    seen["webhook"] = [json.dumps(body) for body in bodies]

    found = {where: leaks("\n".join(texts)) for where, texts in seen.items()}
    assert found == {where: [] for where in seen}
    assert len(bodies) == 2 and "trigger explicit_request fired" in caplog.text
    assert '"kind": "firing"' in seen["triggers.jsonl"][0]
    assert '"kind": "outcome"' in seen["triggers.jsonl"][0]
    popped = engine.handoffs[triggered].packet
    shown = json.dumps(popped)
    for label in ("[card number]", "[national id]", "[iban]", "[code]", "[digits]",
                  "[pressed 4 keys]"):
        assert label in shown, label
    context = json.dumps(engine.handoffs[requested].context)
    assert "[card number]" in context and '"pin": "[redacted]"' in context
    dialled = [uri for uri in seen["human"] if uri.startswith("sip:")]
    assert dialled == [HUMAN, HUMAN, OTHER_HUMAN]  # the routing numbers are intact
    assert HUMAN in seen["records"][0]


# -- the safety nets ----------------------------------------------------------------------
SAID = f"card {VISA}, ssn {SSN}, NI {NINO}, iban {IBAN_DE}, pin {PIN}, {SPOKEN_PIN}"


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_the_log_filter_redacts_a_line_that_formats_something_raw(fmt: str) -> None:
    """logs.configure's handler (as the CLI sets it up) redacts warmline's records:
    message, args and traceback; another package's records are not its business."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        logs.configure("debug", fmt, redact=redact)
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        log = logging.getLogger("warmline.future")
        log.debug("the caller said %s to %s", SAID, HUMAN)
        try:
            raise ValueError(SAID)
        except ValueError:
            log.exception("failed on %r", {"text": SAID})
        logging.getLogger("other").info("not ours: %s", "4111 1111 1111 1111")
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
    written = stream.getvalue()
    assert leaks(written) == [VISA]  # only the line of another package's logger
    assert written.count("[card number]") == 3 and HUMAN in written


def test_the_records_and_the_trigger_log_redact_what_they_are_given(rig: Rig) -> None:
    """Behind the doors, the records and triggers.jsonl redact once more."""
    engine = rig.engine
    engine.record("call-pii-1", "future.event", {"to": HUMAN, "said": SAID,
                                                 "nested": [{"pin": PIN}]})
    [event] = rig.records.events
    assert not leaks(json.dumps(event.data)) and event.data["to"] == HUMAN
    journal = TriggerLog(engine.records_dir)
    journal.firing("call-9f3c2a17be40d615", Firing("future", {"text": SAID}, 3))
    written = journal.path.read_text()
    assert not leaks(written) and "call-9f3c2a17be40d615" in written


def test_keys_pressed_show_how_many_not_which() -> None:
    """A phone sends each key as a turn: a PIN keyed in is one line of "4 keys"; a 0
    inside a card number keyed in at once fires, with evidence that hides the number."""
    state = TriggerState()
    [firing] = evaluate(TriggerConfig(), state, Turn("caller", dtmf=DISCOVER), 0)
    assert firing.evidence == {"dtmf": "16 keys"}
    turns = [Turn("ai", "Please key in your PIN."), *(Turn("caller", dtmf=d) for d in PIN),
             Turn("ai", "Thanks. Press 0 for a person."), Turn("caller", dtmf="0")]
    packet = build_packet(call_id="call-1", caller_number="sip:+15550100@carrier",
                          turns=turns, state=state, firing=firing)
    assert [line["text"] for line in packet["transcript"]] == [
        "Please key in your PIN.", "[pressed 4 keys]", "Thanks. Press 0 for a person.",
        "[pressed 0]"]
    assert not leaks(json.dumps(packet))


class _FailingSummarizer:
    """A plug-in that fails quoting what it was given (as exceptions do)."""

    def summarize(self, packet: dict[str, Any], turns: list[Turn]) -> str:
        raise ValueError(f"cannot summarise {turns[0].text!r}")


def test_a_summarizer_failing_with_the_words_in_its_message_leaks_nothing() -> None:
    turns = [Turn("caller", f"my card is {VISA}")]  # as a test might build, unredacted
    packet = build_packet(call_id="call-1", caller_number="sip:+15550100@carrier",
                          turns=turns, state=TriggerState(), firing=None,
                          summarizer=_FailingSummarizer())
    assert "ValueError" in packet["summary_error"] and not leaks(json.dumps(packet))
