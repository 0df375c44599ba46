"""`warmline demo`: one whole escalation on loopback, with nothing but the Python install.

Three SIP endpoints run in this process on 127.0.0.1, each with its own UA,
sockets and RTP: a caller's phone, warmline's engine with a scripted AI
agent, and a human's phone. The caller says who she is, is verified, the AI
tries a refund lookup that fails, and she asks for a person: the
explicit-request trigger fires, a warm transfer rings the human, whose
phone receives the context in the INVITE before answering; the caller hears
hold audio, the human hears the whisper, and then they talk. The demo
prints the SIP ladder as warmline saw it, the context the human received,
the largest gap in the audio the caller received, and the handoff's
timings, and writes both sides' recordings and an HTML report.
"""

from __future__ import annotations

import asyncio
import html
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from warmline.brain.delivery import decode_uui
from warmline.brain.escalation import EscalationPolicy
from warmline.brain.turns import Action, AuthState, Turn
from warmline.calls.call import Call
from warmline.engine import CallEngine
from warmline.media.negotiation import Negotiation
from warmline.media.player import Player, Samples, save_wav
from warmline.media.relay import EmbeddedRelay, PortRange, RelayLeg
from warmline.media.tts import EspeakTts
from warmline.records.report import kpi_report
from warmline.records.store import RecordWriter, default_url
from warmline.sip.events import Target
from warmline.sip.session import CallAnswered, IncomingCall, Session, SessionEvent
from warmline.sip.useragent import UserAgent
from warmline.transfer.handoff import HANDOFF_HEADER, Destination, Handoff, TransferMode
from warmline.transport.listen import ListenSpec
from warmline.transport.shell import SipShell

Narrator = Callable[[str], None]  # a line for the person watching the demo
HOST = "127.0.0.1"
SCRIPT: list[tuple[str, str, dict[str, Any]]] = [
    ("ai", "Hello, this is the billing assistant. How can I help you today?", {}),
    ("caller", "Hi, I'm Maria. I was charged twice for my subscription this month.",
     {"intent": "billing_dispute", "confidence": 0.88, "slots": {"name": "Maria"}}),
    ("ai", "I am sorry about that. Can you confirm your date of birth?", {}),
    ("caller", "April the second, nineteen eighty.",
     {"auth": AuthState(True, "date of birth", "partial")}),
    ("ai", "Thank you, you are verified. Let me look up the refund.",
     {"actions": (Action("refund_lookup", "failed", "the ledger did not answer"),)}),
    ("caller", "This is taking forever. Please get me a real person.",
     {"intent": "billing_dispute", "confidence": 0.7}),
]
HUMAN_LINE = "Hi Maria, this is Sam from billing. I can see the double charge, let me fix it."
CALLER_LINE = "Oh, thank you so much."


@dataclass
class Phone:
    """A built-in SIP phone: its own UA, sockets and RTP leg; records what it hears."""

    name: str
    shell: SipShell
    relay: EmbeddedRelay
    leg: RelayLeg
    negotiation: Negotiation
    session: Session | None = None
    heard: list[Samples] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    received_invite: dict[str, str] = field(default_factory=dict)

    def listen_to_far_end(self) -> None:
        loop = asyncio.get_running_loop()

        def frame(samples: Samples) -> None:
            self.heard.append(samples)
            self.arrivals.append(loop.time())

        self.leg.record(frame)

    def say(self, speech: Samples) -> asyncio.Future[None]:
        return self.leg.play(Player(speech)).done

    @property
    def uri(self) -> str:
        spec = self.shell.ua.local_address("udp")
        return f"sip:{self.name}@{spec[0]}:{spec[1]}"


async def _phone(name: str, ports: PortRange) -> Phone:
    shell = SipShell(UserAgent())
    await shell.listen(ListenSpec("udp", HOST, 0))
    relay = EmbeddedRelay(HOST, ports)
    leg = await relay.open_leg(name)
    return Phone(name, shell, relay, leg, Negotiation(leg, HOST, ["PCMU", "PCMA"]))


@dataclass
class Ladder:
    """Every SIP message warmline's engine sent or received, as a ladder."""

    names: dict[int, str]
    started: float = field(default_factory=time.monotonic)
    rows: list[tuple[float, str, str, str]] = field(default_factory=list)

    def tap(self, direction: str, data: bytes, peer: Target) -> None:
        first = data.split(b"\r\n", 1)[0].decode("utf-8", "replace")
        summary = first.split(" sip", 1)[0] if not first.startswith("SIP/2.0") else first[8:]
        who = self.names.get(peer.port, f"{peer.host}:{peer.port}")
        self.rows.append((time.monotonic() - self.started, direction, who, summary))

    def render(self) -> str:
        lines = []
        for at, direction, who, summary in self.rows:
            arrow = f"{who:>7} ──{summary}──▶ warmline" if direction == "in" \
                else f"{who:>7} ◀──{summary}── warmline"
            lines.append(f"  {at:6.2f} s  {arrow}")
        return "\n".join(lines)


class ScriptedAgent:
    """The AI side of the demo: speaks its lines and reports each turn as an AI would."""

    def __init__(self, engine: CallEngine, speech: dict[str, Samples], caller: Phone,
                 say: Narrator = lambda line: None) -> None:
        self.say = say  # tells the person watching what happens, as it happens
        self.engine = engine
        self.speech = speech
        self.caller = caller
        self.handoff: Handoff | None = None
        self.triggered_at: float | None = None  # loop time the caller's request fired
        self.done: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def on_call(self, call: Call) -> None:
        self.engine.spawn(self._converse(call))

    async def _converse(self, call: Call) -> None:
        try:
            for speaker, text, reading in SCRIPT:
                self.say(f"{'AI' if speaker == 'ai' else 'Maria'}: {text}")
                speaking = call.caller.media.play(Player(self.speech[text])).done \
                    if speaker == "ai" else self.caller.say(self.speech[text])
                await speaking
                await asyncio.sleep(0.3)
                result = self.engine.add_turn(call.id, Turn(speaker, text, **reading))
                if result.handoff is not None:
                    self.say(f"trigger {result.fired[0].trigger if result.fired else '?'} "
                             f"fired: warm transfer to the human")
                    self.handoff = result.handoff
                    self.triggered_at = asyncio.get_running_loop().time()
                    return
        finally:
            if not self.done.done():
                self.done.set_result(None)


async def run_demo(out: Path, say: Narrator = lambda line: None) -> dict[str, Any]:
    """Run the escalation; returns the figures (also written as report.html in ``out``).
    ``say`` hears a line at each step, so the person watching sees it happen."""
    out.mkdir(parents=True, exist_ok=True)
    say("making the voices (espeak-ng) ...")
    tts = EspeakTts()
    loop = asyncio.get_running_loop()
    texts = [text for _, text, _ in SCRIPT] + [HUMAN_LINE, CALLER_LINE]
    speech = dict(zip(texts, await asyncio.gather(
        *(loop.run_in_executor(None, tts.synthesize, text) for text in texts)), strict=True))
    caller = await _phone("caller", PortRange(32000, 32100))
    human = await _phone("human", PortRange(32100, 32200))
    shell = SipShell(UserAgent())
    engine_spec = await shell.listen(ListenSpec("udp", HOST, 0))
    relay = EmbeddedRelay(HOST, PortRange(32200, 32700))
    (out / "records").mkdir(parents=True, exist_ok=True)
    database = default_url(out / "records")
    records = RecordWriter(database, out / "records")
    engine = CallEngine(shell, relay, HOST, ["PCMU", "PCMA"], records_dir=out / "records",
                        escalation=EscalationPolicy(
                            destination=Destination(human.uri, TransferMode.WARM, 15)),
                        records=records, tts=tts)
    engine.return_announcement = None
    agent = ScriptedAgent(engine, speech, caller, say)
    engine.on_call = agent.on_call
    ladder = Ladder({caller.shell.ua.local_address("udp")[1]: "caller",
                     human.shell.ua.local_address("udp")[1]: "human"})
    shell.tap = ladder.tap
    human.shell.on_event = lambda event: _human_phone(human, event, speech[HUMAN_LINE])
    caller.shell.on_event = lambda event: _caller_phone(caller, event)
    try:
        say("Maria calls the AI agent (SIP INVITE to warmline)")
        caller.session = caller.shell.run(lambda now: caller.shell.ua.invite(
            f"sip:ai@{HOST}:{engine_spec.port}", now, sdp=caller.negotiation.offer(),
            from_='"Maria" <sip:+15550100@127.0.0.1>'))
        await asyncio.wait_for(agent.done, 60)
        await _wait_for(lambda: agent.handoff is not None and
                        any(e.kind == "human_first_word" for e in agent.handoff.events), 30)
        say("the human heard the whisper and speaks to Maria")
        await asyncio.sleep(1.0)
        await caller.say(speech[CALLER_LINE])
        await asyncio.sleep(1.5)
        session = caller.session
        say("Maria hangs up; writing the report")
        caller.shell.run(lambda now: caller.shell.ua.bye(session, now))
        await asyncio.sleep(1.0)
    finally:
        await engine.close()
        for each in (relay, caller.relay, human.relay):
            await each.close()
        for each_shell in (shell, caller.shell, human.shell):
            await each_shell.close()
        records.close()
    figures = _report(out, agent, ladder, caller, human)
    figures["kpis"] = kpi_report(database, days=1)["overall"]
    return figures


async def _wait_for(condition: Any, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("the demo stalled")
        await asyncio.sleep(0.05)


def _caller_phone(phone: Phone, event: SessionEvent) -> None:
    if isinstance(event, CallAnswered) and event.session is phone.session:
        phone.negotiation.accept(event.response.body)
        phone.listen_to_far_end()


def _human_phone(phone: Phone, event: SessionEvent, greeting: Samples) -> None:
    if not isinstance(event, IncomingCall):
        return
    session = phone.session = event.session
    invite = session.invite
    for name in (HANDOFF_HEADER, "X-Warmline-Intent", "X-Warmline-Sentiment",
                 "X-Warmline-Verified", "X-Warmline-Priority", "User-to-User", "Call-Info",
                 "P-Asserted-Identity", "From"):
        value = invite.get(name.lower())
        if value is not None:
            phone.received_invite[name] = value
    phone.shell.run(lambda now: phone.shell.ua.ring(session, now))
    answer = phone.negotiation.answer(session.remote_sdp or b"")

    def pick_up() -> None:
        phone.shell.run(lambda now: phone.shell.ua.answer(session, answer, now))
        phone.listen_to_far_end()
        asyncio.get_running_loop().call_later(4.0, phone.say, greeting)

    asyncio.get_running_loop().call_later(1.5, pick_up)


def _largest_gap(arrivals: list[float]) -> float:
    return max((b - a for a, b in pairwise(arrivals)), default=0.0)


def _report(out: Path, agent: ScriptedAgent, ladder: Ladder, caller: Phone,
            human: Phone) -> dict[str, Any]:
    handoff = agent.handoff
    since = agent.triggered_at if agent.triggered_at is not None else float("inf")
    save_wav(out / "caller_heard.wav", caller.heard)
    save_wav(out / "human_heard.wav", human.heard)
    events = {event.kind: event.at for event in (handoff.events if handoff else [])}
    uui = human.received_invite.get("User-to-User")
    figures: dict[str, Any] = {
        "handoff": handoff.id if handoff else None,
        "status": handoff.status if handoff else "no handoff",
        "trigger": (handoff.packet or {}).get("trigger") if handoff else None,
        # from the trigger to the hang-up: hold audio, whisper time, the switch to the human
        "largest_gap_ms": round(_largest_gap([t for t in caller.arrivals if t >= since])
                                * 1000, 1),
        "trigger_to_answer_s": _between(events, "triggered", "answered"),
        "trigger_to_connected_s": _between(events, "triggered", "connected"),
        "trigger_to_human_first_word_s": _between(events, "triggered", "human_first_word"),
        "human_received": human.received_invite,
        "human_received_uui": decode_uui(uui) if uui else None,
        "summary": (handoff.packet or {}).get("summary") if handoff else None,
        "caller_heard_seconds": round(sum(len(f) for f in caller.heard) / 8000, 1),
        "human_heard_seconds": round(sum(len(f) for f in human.heard) / 8000, 1),
        "events": [event.as_dict() for event in handoff.events] if handoff else [],
    }
    (out / "report.html").write_text(_html(figures, ladder), encoding="utf-8")
    (out / "report.json").write_text(json.dumps(figures, indent=2, default=str))
    figures["ladder"] = ladder.render()
    return figures


def _between(events: dict[str, float], first: str, then: str) -> float | None:
    if first in events and then in events:
        return round(events[then] - events[first], 2)
    return None


def _html(figures: dict[str, Any], ladder: Ladder) -> str:
    rows = "".join(f"<tr><td>{at:.2f}</td><td>{html.escape(who)}</td>"
                   f"<td>{'→' if direction == 'in' else '←'}</td>"
                   f"<td>{html.escape(summary)}</td></tr>"
                   for at, direction, who, summary in ladder.rows)
    context = html.escape(json.dumps(figures["human_received"], indent=2))
    timeline = _timeline_rows(figures["events"])
    return f"""<!doctype html><meta charset="utf-8"><title>warmline demo</title>
<h1>warmline demo: {html.escape(str(figures['status']))}</h1>
<p>Summary the human heard: <b>{html.escape(str(figures['summary']))}</b></p>
<ul><li>Largest gap in the caller's audio from the trigger on: {figures['largest_gap_ms']} ms</li>
<li>Trigger to the human's first word: {figures['trigger_to_human_first_word_s']} s</li></ul>
<h2>Handoff timeline</h2>
<table><tr><th>s after the request</th><th>event</th><th>detail</th></tr>{timeline}</table>
<h2>What the human's phone received</h2><pre>{context}</pre>
<h2>SIP ladder (as warmline saw it)</h2>
<table><tr><th>s</th><th>peer</th><th></th><th>message</th></tr>{rows}</table>
<h2>Recordings</h2><p>Caller: <audio controls src="caller_heard.wav"></audio>
Human: <audio controls src="human_heard.wav"></audio></p>
"""


def _timeline_rows(events: list[dict[str, Any]]) -> str:
    """One row per handoff event, timed from the first (the request)."""
    if not events:
        return ""
    start = events[0]["at"]
    rows = []
    for event in events:
        detail = {key: value for key, value in event.items() if key not in ("at", "kind")}
        rows.append(f"<tr><td>{event['at'] - start:.2f}</td>"
                    f"<td>{html.escape(str(event['kind']))}</td>"
                    f"<td>{html.escape(json.dumps(detail, default=str))}</td></tr>")
    return "".join(rows)


def print_report(figures: dict[str, Any], out: Path) -> None:
    print("SIP ladder (as warmline saw it):")
    print(figures["ladder"])
    print("\nWhat the human's phone received before answering:")
    for name, value in figures["human_received"].items():
        print(f"  {name}: {value}")
    print(f"  User-to-User decodes to: {figures['human_received_uui']}")
    print(f"\nWhisper / summary: {figures['summary']}")
    print(f"Handoff {figures['handoff']}: {figures['status']}")
    print("Largest gap in the audio the caller received from the trigger to the hang-up: "
          f"{figures['largest_gap_ms']} ms")
    print("Timings (KPI: time from trigger to the human's first word):")
    for key in ("trigger_to_answer_s", "trigger_to_connected_s",
                "trigger_to_human_first_word_s"):
        print(f"  {key.replace('_', ' ')}: {figures[key]}")
    kpis = figures["kpis"]
    print(f"KPIs from the records ({out}/records/records.db): {kpis['calls']} call(s), "
          f"transfer share {kpis['transfer_share']:.0%}, trigger to first word p50 "
          f"{kpis['trigger_to_first_word_p50']} s")
    print(f"Caller heard {figures['caller_heard_seconds']} s, "
          f"human heard {figures['human_heard_seconds']} s")
    print(f"\nRecordings and report: {out}/caller_heard.wav, {out}/human_heard.wav, "
          f"{out}/report.html")
