"""AI-to-AI handoff on a real call: bot A hands the caller to bot B with the context, B hands back.

A PJSIP caller (a 700 Hz tone, recording what it hears) calls `warmline
serve`, whose agent is bot A (a WebSocket server in this test). Bot A asks
over REST, with its call's own token, for a temporary transfer to bot B's
ws:// URL with a context. Bot B's ``start`` carries the context; it hears
the caller, speaks a 1300 Hz tone, reads the whole packet at
GET /handoffs/{id}/context with the handoff's token, and closes with code
1000 and a report. The call goes back to bot A: a second ``start`` saying
it is a return and what B reported. The records hold the handoff's events.
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

from tests.interop.peers import free_port, relay_block, start_serve, stop_serve, wait_for_log
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

    def __init__(self, api: str, b_url: str) -> None:
        self.api, self.b_url = api, b_url
        self.a_starts: list[dict[str, Any]] = []
        self.a_events: list[list[str]] = []
        self.transfer: dict[str, Any] = {}
        self.b_start: dict[str, Any] = {}
        self.b_heard: list[np.ndarray[Any, Any]] = []
        self.b_context: dict[str, Any] = {}
        self.tasks: list[asyncio.Task[None]] = []

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
                json={"to": self.b_url, "final": False,
                      "context": {"summary": "wants the account balance",
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
        await socket.close(code=1000, reason=REPORT)


def test_bot_a_hands_the_caller_to_bot_b_and_gets_them_back(tmp_path: Path) -> None:
    sip_port, http_port, media = free_port(), free_port(), relay_block()
    a_port, b_port = free_port(), free_port()
    api = f"http://127.0.0.1:{http_port}"
    bots = Bots(api, f"ws://127.0.0.1:{b_port}/bot-b")
    workdir = tmp_path / "warmline"
    workdir.mkdir()
    heard_by_caller = tmp_path / "caller.wav"
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        async with websockets.serve(bots.bot_a, "127.0.0.1", a_port), \
                websockets.serve(bots.bot_b, "127.0.0.1", b_port):
            server = start_serve(["--sip", f"udp:127.0.0.1:{sip_port}",
                                  "--http", f"127.0.0.1:{http_port}",
                                  "--agent-ws", f"ws://127.0.0.1:{a_port}/bot-a",
                                  "--media-ports", f"{media}-{media + 40}"], workdir)
            try:
                await asyncio.to_thread(wait_for_log, server, "HTTP API")
                with pjsip_phone(tmp_path / "caller", free_port(), user="caller",
                                 tone_hz=CALLER_HZ, record=heard_by_caller,
                                 hangup_after_ms=7500, lifetime=20,
                                 dial=f"sip:ai@127.0.0.1:{sip_port}") as caller:
                    await asyncio.to_thread(caller.wait, "done", 20)
                    seen["states"] = caller.states()
                deadline = time.monotonic() + 5
                while len(bots.a_events) < 2 or "stop" not in bots.a_events[-1]:
                    assert time.monotonic() < deadline, bots.a_events
                    await asyncio.sleep(0.1)
                call_id = bots.a_starts[0]["callSid"]
                async with httpx.AsyncClient(base_url=api, timeout=5) as http:
                    handoff_id = bots.transfer["body"]["handoff_id"]
                    seen["handoff"] = (await http.get(
                        f"/handoffs/{handoff_id}",
                        params={"token": bots.b_start["customParameters"]["handoff_token"]}
                    )).json()
            finally:
                stop_serve(server)
            seen["history"] = call_history(default_url(workdir / "warmline-records"), call_id)
            await asyncio.gather(*bots.tasks)

    asyncio.run(scenario())
    handoff_id = bots.transfer["body"]["handoff_id"]
    assert ("CONFIRMED", 200) in seen["states"]
    assert bots.transfer["status"] == 202, bots.transfer
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
    with wave.open(str(heard_by_caller)) as recording:
        rate = recording.getframerate()
        samples = np.frombuffer(recording.readframes(recording.getnframes()), dtype="<i2")
    assert strength(samples, rate, BOT_B_HZ) > 0.5, "the caller did not hear bot B"
    assert strength(samples, rate, 1700) < 0.05  # a tone nobody played: the measure is fair
    # the handoff's outcome, live and in the records
    kinds = [event["kind"] for event in seen["handoff"]["events"]]
    assert kinds[0] == "requested" and "connected" in kinds and "attempt_succeeded" in kinds
    assert kinds[-3:] == ["agent_ended", "returned_to_ai", "completed"]
    recorded = [event["kind"] for event in seen["history"]["events"]
                if event["handoff_id"] == handoff_id]
    assert [f"handoff.{kind}" for kind in kinds] == recorded
    requested = next(event for event in seen["history"]["events"]
                     if event["kind"] == "handoff.requested")
    assert requested["data"]["to"] == bots.b_url and requested["data"]["mode"] == "agent"
