"""An external bot on a WebSocket (Twilio Media Streams framing) hears the caller and speaks.

Two sipp callers stream speech at once; the first call's bot sends garbage
and is disconnected, the second's gets the caller's audio, speaks a tone
with a mark after it, and gets the mark back once the tone has played. The
misbehaving bot costs its own call nothing but the bot (hold audio follows)
and the other call nothing at all.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import websockets

from tests.interop.peers import (
    engine,
    free_port,
    relay_block,
    render_scenario,
    run_sipp,
    speech_files,
)
from warmline.agents.media_stream import MediaStreamAgent
from warmline.engine import CallEngine
from warmline.media import g711
from warmline.media.relay import EmbeddedRelay, PortRange

pytestmark = pytest.mark.interop
TONE = np.round(np.sin(2 * np.pi * 1000 * np.arange(8000) / 8000) * 8000).astype(np.int16)


class Bot:
    """A bot server: the first connection sends garbage, later ones behave."""

    def __init__(self) -> None:
        self.connections = 0
        self.sessions: list[dict[str, Any]] = []

    async def handle(self, socket: Any) -> None:
        self.connections += 1
        if self.connections == 1:
            await socket.recv()
            await socket.send("this is not json {")
            await socket.wait_closed()
            return
        session: dict[str, Any] = {"events": [], "audio": [], "marks": []}
        self.sessions.append(session)
        loop = asyncio.get_running_loop()
        async for raw in socket:
            message = json.loads(raw)
            session["events"].append(message["event"])
            if message["event"] == "start":
                session["start"] = message
                sid = message["streamSid"]
                payload = base64.b64encode(g711.ulaw_encode(TONE)).decode()
                await socket.send(json.dumps({"event": "media", "streamSid": sid,
                                              "media": {"payload": payload}}))
                await socket.send(json.dumps({"event": "mark", "streamSid": sid,
                                              "mark": {"name": "greeting"}}))
                session["sent_at"] = loop.time()
            elif message["event"] == "media":
                session["audio"].append(g711.ulaw_decode(
                    base64.b64decode(message["media"]["payload"])))
            elif message["event"] == "mark":
                session["marks"].append((message["mark"]["name"], loop.time()))


def test_a_bot_on_the_media_stream_and_a_misbehaving_one(tmp_path: Path) -> None:
    speech, _ = speech_files(tmp_path, "Hello, I need help with my internet connection. " * 3)
    bot = Bot()
    agents: list[MediaStreamAgent] = []

    async def scenario() -> None:
        bot_port = free_port()
        async with websockets.serve(bot.handle, "127.0.0.1", bot_port):
            base = relay_block()
            relay = EmbeddedRelay("127.0.0.1", PortRange(base, base + 40))
            async with engine("udp") as running:
                calls = CallEngine(running.shell, relay, "127.0.0.1", ["PCMU"],
                                   records_dir=tmp_path / "records")
                agent = MediaStreamAgent(calls, f"ws://127.0.0.1:{bot_port}/stream")
                agents.append(agent)
                calls.on_call = agent.on_call
                callers = []
                for n in range(2):
                    folder = tmp_path / f"caller{n}"
                    folder.mkdir()
                    scenario_file = render_scenario("caller_rtp_stream.xml", folder,
                                                    audio=str(speech), seconds="4000")
                    callers.append(run_sipp(
                        ["-sf", str(scenario_file), f"127.0.0.1:{running.spec.port}",
                         "-p", str(free_port()), "-mi", "127.0.0.1", "-mp",
                         str(free_port() // 2 * 2), "-m", "1"], folder, timeout=20))
                    await asyncio.sleep(0.3)  # the first caller meets the first (bad) bot
                for result in await asyncio.gather(*callers):
                    assert result.returncode == 0, result.output[-2000:]
                await asyncio.sleep(0.5)
                sent = [call.caller.media.counters.sent for call in calls.calls.values()]
                assert all(count > 150 for count in sent), sent  # hold audio or the bot
                await calls.close()
            await relay.close()

    asyncio.run(scenario())
    [agent] = agents
    assert agent.disconnected_for_misbehaving == 1 and agent.sessions == 2
    [session] = bot.sessions
    start = session["start"]["start"]
    assert start["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                    "channels": 1}
    assert start["callSid"].startswith("call-") and session["events"][:2] == ["connected", "start"]
    assert "api_url" not in start["customParameters"]  # no HTTP API: nothing to name
    assert session["events"][-1] == "stop"
    heard = np.concatenate(session["audio"])
    assert len(session["audio"]) > 150 and np.abs(heard).max() > 1000  # the caller's speech
    [(name, echoed_at)] = session["marks"]
    assert name == "greeting" and 0.9 < echoed_at - session["sent_at"] < 1.5  # after 1 s


def test_a_bot_can_also_connect_to_warmline_for_a_call(tmp_path: Path) -> None:
    """The same framing on warmline's own endpoint: ws://.../calls/{id}/stream."""
    from warmline.api import build_app, start_http, stop_http

    speech, _ = speech_files(tmp_path, "I would like to check my order status please. " * 3)
    scenario_file = render_scenario("caller_rtp_stream.xml", tmp_path, audio=str(speech),
                                    seconds="6000")
    seen: dict[str, Any] = {}

    async def scenario() -> None:
        base = relay_block()
        relay = EmbeddedRelay("127.0.0.1", PortRange(base, base + 40))
        async with engine("udp") as running:
            calls = CallEngine(running.shell, relay, "127.0.0.1", ["PCMU"],
                               records_dir=tmp_path / "records")
            http_port = free_port()
            server, task = await start_http(build_app(calls, "s3cret"), "127.0.0.1", http_port)
            caller = asyncio.ensure_future(run_sipp(
                ["-sf", str(scenario_file), f"127.0.0.1:{running.spec.port}", "-p",
                 str(free_port()), "-mi", "127.0.0.1", "-mp", str(free_port() // 2 * 2),
                 "-m", "1"], tmp_path, timeout=20))
            while not calls.calls:
                await asyncio.sleep(0.05)
            [call_id] = calls.calls
            url = f"ws://127.0.0.1:{http_port}/calls/{call_id}/stream"
            own = calls.calls[call_id].token  # the bot holds its call's token, not the API's
            for wrong in ("wrong", "s3cret"):  # the API token never goes in a URL
                with pytest.raises(websockets.exceptions.InvalidStatus, match="403"):
                    async with websockets.connect(url + f"?token={wrong}") as refused:
                        await refused.recv()
            async with websockets.connect(url + f"?token={own}") as bot:
                first, start = json.loads(await bot.recv()), json.loads(await bot.recv())
                seen["events"] = [first["event"], start["event"]]
                seen["api_url"] = start["start"]["customParameters"]["api_url"] == \
                    f"http://127.0.0.1:{http_port}"  # where the bot uses its token
                inbound = 0
                while inbound < 50:
                    if json.loads(await bot.recv())["event"] == "media":
                        inbound += 1
                sid = start["streamSid"]
                tone = base64.b64encode(g711.ulaw_encode(TONE)).decode()
                await bot.send(json.dumps({"event": "media", "streamSid": sid,
                                           "media": {"payload": tone}}))
                await bot.send(json.dumps({"event": "mark", "streamSid": sid,
                                           "mark": {"name": "said"}}))
                while True:
                    message = json.loads(await bot.recv())
                    if message["event"] == "mark":
                        seen["mark"] = message["mark"]["name"]
                        break
            async with websockets.connect(
                    url, additional_headers={"Authorization": "Bearer s3cret"}) as rude:
                await rude.recv()
                await rude.send("garbage")
                with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
                    while True:
                        await rude.recv()
                seen["close_code"] = closed.value.rcvd.code if closed.value.rcvd else None
            result = await caller
            assert result.returncode == 0, result.output[-2000:]
            await stop_http(server, task)
            await calls.close()
        await relay.close()

    asyncio.run(scenario())
    assert seen == {"events": ["connected", "start"], "api_url": True, "mark": "said",
                    "close_code": 1008}
