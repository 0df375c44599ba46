"""AI-to-AI handoff on a real call: bot A hands the caller to bot B with the context, B hands back.

A PJSIP caller (a 700 Hz tone, recording what it hears) calls `warmline
serve`, whose agent is bot A (a WebSocket server in this test). Bot A asks
over REST, with its call's own token, for a temporary transfer to bot B's
ws:// URL with a context. Bot B's ``start`` carries the context; it hears
the caller, speaks a 1300 Hz tone, reads the whole packet at
GET /handoffs/{id}/context with the handoff's token, and closes with code
1000 and a report. The call goes back to bot A: a second ``start`` saying
it is a return and what B reported. The records hold the handoff's events.
Also: an unreachable agent falling back to a named one that hands back over
REST, bot B handing the caller on to a PJSIP human, and hold audio while a
slow agent's handshake is pending.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import websockets

from tests.interop.peers import free_port, relay_block, start_serve, stop_serve, wait_until_serving
from tests.interop.pjsip_phone import pjsip_phone
from warmline.media import g711
from warmline.records.report import call_history
from warmline.records.store import default_url

pytestmark = pytest.mark.interop
CALLER_HZ, BOT_B_HZ = 700, 1300
B_SECONDS = 3.5  # bot B keeps the call this long (past the handoff's settling time)
REPORT = "told the caller the balance"


def tone(hz: int, seconds: float) -> str:
    samples = np.round(np.sin(2 * np.pi * hz * np.arange(int(8000 * seconds)) / 8000)
                       * 8000).astype(np.int16)
    return base64.b64encode(g711.ulaw_encode(samples)).decode()


def strength(samples: np.ndarray[Any, Any], rate: int, hz: int) -> float:
    """The largest share of a one-second stretch's energy that lies within 15 Hz of ``hz``
    (near 1 for a clean tone, near 0 for silence, ringback or anything else)."""
    best = 0.0
    for start in range(0, max(1, len(samples) - rate), rate // 2):
        piece = samples[start:start + rate].astype(np.float64)
        power = np.abs(np.fft.rfft(piece * np.hanning(len(piece)))) ** 2
        freqs = np.fft.rfftfreq(len(piece), 1 / rate)
        band = power[(freqs > hz - 15) & (freqs < hz + 15)].sum()
        best = max(best, float(band / (power.sum() + 1e-9)))
    return best


class Bots:
    """Bot A (the call's agent) and bot B (the one it hands the caller to)."""

    def __init__(self, api: str, b_url: str, request: dict[str, Any] | None = None,
                 return_by_rest: bool = False) -> None:
        self.api, self.b_url = api, b_url
        self.request = request or {"to": b_url, "final": False}  # what A asks for
        self.return_by_rest = return_by_rest  # B hands back with POST /calls/{id}/return
        self.b_hands_on_to: str | None = None  # B asks for its own transfer there instead
        self.b_transfer: dict[str, Any] = {}
        self.b_events: list[str] = []
        self.a_starts: list[dict[str, Any]] = []
        self.a_events: list[list[str]] = []
        self.transfer: dict[str, Any] = {}
        self.b_start: dict[str, Any] = {}
        self.b_heard: list[np.ndarray[Any, Any]] = []
        self.b_context: dict[str, Any] = {}
        self.tasks: list[asyncio.Task[None]] = []
        self.b_returned = 0

    async def bot_a(self, socket: Any) -> None:
        events: list[str] = []
        self.a_events.append(events)
        async for raw in socket:
            message = json.loads(raw)
            events.append(message["event"])
            if message["event"] == "start":
                self.a_starts.append(message["start"])
                if len(self.a_starts) == 1:
                    self.tasks.append(asyncio.ensure_future(self._hand_to_b(message["start"])))

    async def _hand_to_b(self, start: dict[str, Any]) -> None:
        await asyncio.sleep(0.5)
        token = start["customParameters"]["call_token"]
        async with httpx.AsyncClient(base_url=self.api, timeout=5) as http:
            answer = await http.post(
                f"/calls/{start['callSid']}/transfer",
                headers={"Authorization": f"Bearer {token}"},
                json={**self.request, "context": {"summary": "wants the account balance",
                                                  "intent": "balance"}})
        self.transfer = {"status": answer.status_code, "body": answer.json()}

    async def bot_b(self, socket: Any) -> None:
        connected = json.loads(await socket.recv())
        start = json.loads(await socket.recv())
        assert (connected["event"], start["event"]) == ("connected", "start")
        self.b_start = start["start"]
        await socket.send(json.dumps({"event": "media", "streamSid": start["streamSid"],
                                      "media": {"payload": tone(BOT_B_HZ, 2.0)}}))
        until = asyncio.get_running_loop().time() + B_SECONDS
        while (left := until - asyncio.get_running_loop().time()) > 0:
            try:
                message = json.loads(await asyncio.wait_for(socket.recv(), left))
            except TimeoutError:
                break
            if message["event"] == "media":
                self.b_heard.append(g711.ulaw_decode(
                    base64.b64decode(message["media"]["payload"])))
        parameters = self.b_start["customParameters"]
        async with httpx.AsyncClient(base_url=self.api, timeout=5) as http:
            answer = await http.get(f"/handoffs/{parameters['handoff_id']}/context",
                                    params={"token": parameters["handoff_token"]})
            self.b_context = {"status": answer.status_code, **answer.json()}
            if self.b_hands_on_to is not None:
                answer = await http.post(
                    f"/calls/{self.b_start['callSid']}/transfer",
                    json={"to": self.b_hands_on_to, "mode": "bridge", "timeout": 10},
                    headers={"Authorization": f"Bearer {parameters['call_token']}"})
                self.b_transfer = {"status": answer.status_code, "body": answer.json()}
                async for raw in socket:  # until warmline stops this stream
                    self.b_events.append(json.loads(raw)["event"])
                return
            if self.return_by_rest:
                answer = await http.post(
                    f"/calls/{self.b_start['callSid']}/return", json={"report": REPORT},
                    headers={"Authorization": f"Bearer {parameters['call_token']}"})
                self.b_returned = answer.status_code
                async for _ in socket:  # read on until warmline closes it (1000)
                    pass
                return
        await socket.close(code=1000, reason=REPORT)


def run_call(tmp_path: Path, bots: Bots, ports: tuple[int, int, int, int],
             config: str = "", a_sessions: int = 2, b_handshake_delay: float = 0.0
             ) -> dict[str, Any]:
    """A PJSIP caller on `warmline serve` whose agent is bot A, for about 7.5 s; what was
    seen: the caller's states, the handoff as the API shows it, the call in the records."""
    sip_port, http_port, a_port, b_port = ports
    media = relay_block()
    workdir = tmp_path / "warmline"
    workdir.mkdir()
    (workdir / "warmline.toml").write_text(config)
    seen: dict[str, Any] = {}

    async def slow_handshake(connection: Any, request: Any) -> None:
        await asyncio.sleep(b_handshake_delay)  # bot B is slow to accept the WebSocket

    async def scenario() -> None:
        async with websockets.serve(bots.bot_a, "127.0.0.1", a_port), \
                websockets.serve(bots.bot_b, "127.0.0.1", b_port,
                                 process_request=slow_handshake):
            server = start_serve(["--config", str(workdir / "warmline.toml"),
                                  "--sip", f"udp:127.0.0.1:{sip_port}",
                                  "--http", f"127.0.0.1:{http_port}",
                                  "--agent-ws", f"ws://127.0.0.1:{a_port}/bot-a",
                                  "--media-ports", f"{media}-{media + 40}"], workdir)
            try:
                await asyncio.to_thread(wait_until_serving, server, http_port)
                with pjsip_phone(tmp_path / "caller", free_port(), user="caller",
                                 tone_hz=CALLER_HZ, record=tmp_path / "caller.wav",
                                 hangup_after_ms=7500, lifetime=20,
                                 dial=f"sip:ai@127.0.0.1:{sip_port}") as caller:
                    await asyncio.to_thread(caller.wait, "done", 20)
                    seen["states"] = caller.states()
                deadline = time.monotonic() + 5
                while len(bots.a_events) < a_sessions or "stop" not in bots.a_events[-1]:
                    assert time.monotonic() < deadline, (bots.a_events, server.log()[-3000:])
                    await asyncio.sleep(0.1)
                handoff_id = bots.transfer["body"]["handoff_id"]
                async with httpx.AsyncClient(base_url=bots.api, timeout=5) as http:
                    seen["handoff"] = (await http.get(
                        f"/handoffs/{handoff_id}",
                        params={"token": bots.b_start["customParameters"]["handoff_token"]}
                    )).json()
            finally:
                stop_serve(server)
            seen["history"] = call_history(default_url(workdir / "warmline-records"),
                                           bots.a_starts[0]["callSid"])
            await asyncio.gather(*bots.tasks)

    asyncio.run(scenario())
    assert ("CONFIRMED", 200) in seen["states"]
    assert bots.transfer["status"] == 202, bots.transfer
    return seen


def heard_by_caller(tmp_path: Path, hz: int) -> float:
    with wave.open(str(tmp_path / "caller.wav")) as recording:
        rate = recording.getframerate()
        samples = np.frombuffer(recording.readframes(recording.getnframes()), dtype="<i2")
    return strength(samples, rate, hz)


def ringback_before_bot_b(tmp_path: Path) -> float:
    """The share of the 2 s before bot B's tone first reached the caller that sounded like
    ringback (the hold audio: 440 + 480 Hz, audible); 0 when B's tone never came."""
    with wave.open(str(tmp_path / "caller.wav")) as recording:
        rate = recording.getframerate()
        samples = np.frombuffer(recording.readframes(recording.getnframes()),
                                dtype="<i2").astype(np.float64)
    step = rate // 4
    pieces = [samples[start:start + step] for start in range(0, len(samples) - step, step)]

    def share(piece: np.ndarray[Any, Any], hz: int) -> float:
        power = np.abs(np.fft.rfft(piece * np.hanning(len(piece)))) ** 2
        freqs = np.fft.rfftfreq(len(piece), 1 / rate)
        return float(power[(freqs > hz - 20) & (freqs < hz + 20)].sum() / (power.sum() + 1e-9))

    onset = next((n for n, piece in enumerate(pieces) if share(piece, BOT_B_HZ) > 0.5), None)
    if onset is None or onset < 9:
        return 0.0
    before = pieces[onset - 9:onset - 1]  # 2 s, leaving out the quarter where B began
    audible = [piece for piece in before if np.sqrt((piece ** 2).mean()) > 300
               and share(piece, 440) + share(piece, 480) > 0.6]
    return len(audible) / len(before)


def recorded_kinds(seen: dict[str, Any], handoff_id: str) -> list[str]:
    return [event["kind"] for event in seen["history"]["events"]
            if event["handoff_id"] == handoff_id]


def test_bot_a_hands_the_caller_to_bot_b_and_gets_them_back(tmp_path: Path) -> None:
    ports = (free_port(), free_port(), free_port(), free_port())
    bots = Bots(f"http://127.0.0.1:{ports[1]}", f"ws://127.0.0.1:{ports[3]}/bot-b")
    seen = run_call(tmp_path, bots, ports)
    handoff_id = bots.transfer["body"]["handoff_id"]
    # bot A: stopped when the call went to B, then a second start for the return
    assert len(bots.a_starts) == 2 and bots.a_events[0][-1] == "stop"
    back = bots.a_starts[1]["customParameters"]
    assert back["returned"] == "true" and back["agent_report"] == REPORT
    assert back["returned_from"] == bots.b_url and back["returned_handoff_id"] == handoff_id
    # bot B: the context in its start, and over REST with the handoff's token
    parameters = bots.b_start["customParameters"]
    assert parameters["handoff_id"] == handoff_id and parameters["final"] == "false"
    assert parameters["summary"] == "wants the account balance"
    assert parameters["intent"] == "balance" and parameters["call_token"]
    assert bots.b_context["status"] == 200
    assert bots.b_context["context"]["summary"] == "wants the account balance"
    # audio both ways: B heard the caller's tone, the caller heard B's
    assert sum(len(chunk) for chunk in bots.b_heard) > 8000 * 2
    assert strength(np.concatenate(bots.b_heard), 8000, CALLER_HZ) > 0.5
    assert heard_by_caller(tmp_path, BOT_B_HZ) > 0.5, "the caller did not hear bot B"
    assert heard_by_caller(tmp_path, 1700) < 0.05  # a tone nobody played: the measure is fair
    # the handoff's outcome, live and in the records
    kinds = [event["kind"] for event in seen["handoff"]["events"]]
    assert kinds == ["requested", "attempt", "connected", "attempt_succeeded", "agent_ended",
                     "returned_to_ai", "completed"]
    assert [f"handoff.{kind}" for kind in kinds] == recorded_kinds(seen, handoff_id)
    requested = next(event for event in seen["history"]["events"]
                     if event["kind"] == "handoff.requested")
    assert requested["data"]["to"] == bots.b_url and requested["data"]["mode"] == "agent"


def test_an_unreachable_agent_falls_back_to_a_named_one_that_returns_over_rest(
        tmp_path: Path) -> None:
    ports = (free_port(), free_port(), free_port(), free_port())
    b_url, dead = f"ws://127.0.0.1:{ports[3]}/bot-b", f"ws://127.0.0.1:{free_port()}/gone"
    bots = Bots(f"http://127.0.0.1:{ports[1]}", b_url, return_by_rest=True,
                request={"to": dead, "final": False, "fallback": [{"to": "agent:b"}]})
    seen = run_call(tmp_path, bots, ports,
                    config=f'[agents.b]\nurl = "{b_url}"\nconnect_timeout = 2\n')
    handoff_id = bots.transfer["body"]["handoff_id"]
    assert bots.b_returned == 202
    back = bots.a_starts[1]["customParameters"]
    assert back["returned"] == "true" and back["agent_report"] == REPORT
    assert back["returned_from"] == "agent:b"
    assert bots.b_start["customParameters"]["handoff_id"] == handoff_id
    assert heard_by_caller(tmp_path, BOT_B_HZ) > 0.5, "the caller did not hear bot B"
    events = seen["handoff"]["events"]
    assert [event["kind"] for event in events] == [
        "requested", "attempt", "attempt_failed", "fallback", "attempt", "connected",
        "attempt_succeeded", "agent_ended", "returned_to_ai", "completed"]
    failed = events[2]
    assert failed["to"] == dead and failed["reason"].startswith("agent unreachable")
    assert events[7]["handed_back"] is True and events[7]["report"] == REPORT
    assert recorded_kinds(seen, handoff_id)[2] == "handoff.attempt_failed"


def test_bot_b_that_has_the_call_hands_it_on_to_a_human(tmp_path: Path) -> None:
    ports = (free_port(), free_port(), free_port(), free_port())
    b_url = f"ws://127.0.0.1:{ports[3]}/bot-b"
    bots = Bots(f"http://127.0.0.1:{ports[1]}", b_url, request={"to": b_url, "final": True})
    with pjsip_phone(tmp_path / "human", free_port(), ring_ms=100,
                     hangup_after_ms=1500) as human:
        bots.b_hands_on_to = human.uri
        seen = run_call(tmp_path, bots, ports, a_sessions=1)
        human.wait("done", timeout=10)
    first = bots.transfer["body"]["handoff_id"]
    assert bots.b_transfer["status"] == 202, bots.b_transfer
    second = bots.b_transfer["body"]["handoff_id"]
    assert bots.b_events[-1] == "stop" and ("CONFIRMED", 200) in human.states()
    assert len(bots.a_starts) == 1  # final: the first agent does not get the call back
    kinds = [event["kind"] for event in seen["handoff"]["events"]]
    assert kinds[-2:] == ["handed_on", "completed"]
    recorded = recorded_kinds(seen, second)
    assert recorded[0] == "handoff.requested" and "handoff.connected" in recorded
    assert recorded_kinds(seen, first)[-2:] == ["handoff.handed_on", "handoff.completed"]


def test_the_caller_hears_hold_audio_while_a_slow_agent_connects(tmp_path: Path) -> None:
    ports = (free_port(), free_port(), free_port(), free_port())
    bots = Bots(f"http://127.0.0.1:{ports[1]}", f"ws://127.0.0.1:{ports[3]}/bot-b")
    seen = run_call(tmp_path, bots, ports, b_handshake_delay=2.5)
    events = seen["handoff"]["events"]
    attempt, connected = (next(e["at"] for e in events if e["kind"] == kind)
                          for kind in ("attempt", "connected"))
    assert connected - attempt >= 2.4  # the handshake really was slow, and it still connected
    # bot A sends silence and bot B a 1300 Hz tone: the hold audio (ringback) fills the
    # wait for B's handshake (its cadence: 2 s on, then 4 s off)
    assert ringback_before_bot_b(tmp_path) >= 0.75, "dead air while the agent connected"
    assert heard_by_caller(tmp_path, BOT_B_HZ) > 0.5
    assert [e["kind"] for e in events][-3:] == ["agent_ended", "returned_to_ai", "completed"]
