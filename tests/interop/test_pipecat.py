"""A Pipecat bot (the real pipecat-ai package) on warmline calls: audio, hang-up, transfer.

``warmline serve --agent-ws`` streams each call to a bot built the way Pipecat's
own telephony examples build one: FastAPI's WebSocket, ``parse_telephony_websocket``,
``FastAPIWebsocketTransport`` with a Twilio serializer, a ``PipelineWorker``. No
STT, LLM or TTS: the bot's processor listens to the caller (a PJSIP phone playing
a 700 Hz tone), answers with a 1000 Hz tone, then either ends the pipeline (the
caller must get a BYE at once) or lets a scripted LLMService call the transfer
tool as a real LLM service does (the caller must reach a PJSIP human and stay
with them after the bot is gone).

The hang-up runs twice: with warmline.pipecat's serializer, and with Pipecat's
stock TwilioFrameSerializer given only ``base_url`` and the call's token (so the
Twilio-compatible route is checked against Pipecat's own hang-up code).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import wave
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI, WebSocket
from pipecat.adapters.llm.schemas.tools_schema import ToolsSchema
from pipecat.frames.frames import (
    BotStoppedSpeakingFrame,
    EndWorkerFrame,
    Frame,
    FunctionCallFromLLM,
    FunctionCallResultFrame,
    InputAudioRawFrame,
    LLMContextFrame,
    TTSAudioRawFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.base_serializer import FrameSerializer
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.services.llm_service import LLMService
from pipecat.transports.websocket.fastapi import FastAPIWebsocketParams, FastAPIWebsocketTransport
from pipecat.workers.runner import WorkerRunner

from tests.interop.peers import free_port, relay_block, start_serve, stop_serve, wait_until_serving
from tests.interop.pjsip_phone import PjsipPhone, pjsip_phone
from warmline.api import start_http, stop_http
from warmline.pipecat import WarmlineFrameSerializer, transfer_tool
from warmline.records.store import connect, default_url, read_events

pytestmark = pytest.mark.interop
RATE = 8000
CALLER_HZ, BOT_HZ, HUMAN_HZ = 700, 1000, 1300
API_TOKEN = {"Authorization": "Bearer the-api-token"}
BOT_TONE = (np.sin(2 * np.pi * BOT_HZ * np.arange(RATE) / RATE) * 8000).astype(np.int16)


def tone_share(samples: np.ndarray, hz: int, rate: int = RATE) -> float:
    """The share of the audio's energy within 20 Hz of ``hz`` (1.0: that tone alone)."""
    samples = samples.astype(np.float64)
    power = np.abs(np.fft.rfft(samples * np.hanning(len(samples)))) ** 2
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    return float(power[np.abs(freqs - hz) < 20].sum() / (power.sum() + 1e-9))


def heard_in(path: Path, hz: int, last_seconds: float | None = None) -> float:
    """tone_share of a phone's recording (PJSIP records at its bridge's rate)."""
    with wave.open(str(path)) as wav:
        rate = wav.getframerate()
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    if last_seconds is not None:
        samples = samples[-int(rate * last_seconds):]
    return tone_share(samples, hz, rate)


@dataclass
class BotLog:
    """What the bot saw, for the test to check once the call is over."""

    heard_caller: float = 0.0  # the caller's tone in the bot's first second of audio
    ended_at: float | None = None  # monotonic clock: the bot ended its pipeline
    results: list[Any] = field(default_factory=list)  # what the transfer tool told the LLM
    serializer: FrameSerializer | None = None
    finished: asyncio.Event = field(default_factory=asyncio.Event)


class Turn(Enum):
    LISTENING = "listening"
    SPEAKING = "speaking"
    DONE = "done"


class Responder(FrameProcessor):
    """Listens for a second, answers with a tone, then ends the call or asks for a transfer."""

    def __init__(self, log: BotLog, then: Callable[[Responder], Any]) -> None:
        super().__init__()
        self.log, self.then = log, then
        self.heard: list[np.ndarray] = []
        self.turn = Turn.LISTENING

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, InputAudioRawFrame) and self.turn is Turn.LISTENING:
            self.heard.append(np.frombuffer(frame.audio, dtype=np.int16))
            if sum(map(len, self.heard)) >= RATE:
                self.turn = Turn.SPEAKING
                self.log.heard_caller = tone_share(np.concatenate(self.heard), CALLER_HZ)
                # what a TTS service pushes: the transport says when the bot stopped speaking
                await self.push_frame(TTSAudioRawFrame(BOT_TONE.tobytes(), RATE, 1))
        elif isinstance(frame, BotStoppedSpeakingFrame) and self.turn is Turn.SPEAKING:
            self.turn = Turn.DONE
            await self.then(self)
        await self.push_frame(frame, direction)


async def end_the_call(responder: Responder) -> None:
    responder.log.ended_at = time.monotonic()
    await responder.push_frame(EndWorkerFrame(reason="the bot is done"))


class ScriptedLLM(LLMService):
    """An LLM service whose model always answers a context with one tool call: what a
    real one does once it has parsed its provider's reply."""

    def __init__(self, arguments: dict[str, Any]) -> None:
        super().__init__()
        self.arguments = arguments

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)  # registers the context's tool handlers
        if isinstance(frame, LLMContextFrame):
            [tool] = frame.context.tools.standard_tools
            await self.run_function_calls([FunctionCallFromLLM(
                function_name=tool.name, tool_call_id="call-1", arguments=self.arguments,
                context=frame.context)])
        else:
            await self.push_frame(frame, direction)


class ResultCatcher(FrameProcessor):
    def __init__(self, log: BotLog) -> None:
        super().__init__()
        self.log = log

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, FunctionCallResultFrame):
            self.log.results.append(frame.result)
        await self.push_frame(frame, direction)


def bot_app(log: BotLog, build_serializer: Callable[[Any], FrameSerializer],
            transfer_to: str | None = None) -> FastAPI:
    """The bot, as Pipecat's telephony examples write one (plus our serializer or tool)."""
    app = FastAPI()

    @app.websocket("/ws")
    async def call(websocket: WebSocket) -> None:
        await websocket.accept()
        _, call_data = await parse_telephony_websocket(websocket)
        log.serializer = build_serializer(call_data)
        transport = FastAPIWebsocketTransport(websocket, FastAPIWebsocketParams(
            audio_in_enabled=True, audio_out_enabled=True, add_wav_header=False,
            serializer=log.serializer))
        stages: list[FrameProcessor] = [transport.input()]
        if transfer_to is None:
            stages.append(Responder(log, end_the_call))
        else:
            tool = transfer_tool(call_data, {"support": transfer_to},
                                 options={"timeout": 10})
            context = LLMContext([{"role": "system", "content": "Help, or transfer."}],
                                 tools=ToolsSchema(standard_tools=[tool]))

            async def ask_the_llm(responder: Responder) -> None:
                await responder.push_frame(LLMContextFrame(context))

            stages += [Responder(log, ask_the_llm), ScriptedLLM(
                {"destination": "support", "summary": "caller needs help with a router"}),
                ResultCatcher(log)]
        worker = PipelineWorker(Pipeline([*stages, transport.output()]), params=PipelineParams(
            audio_in_sample_rate=RATE, audio_out_sample_rate=RATE))

        @transport.event_handler("on_client_disconnected")
        async def gone(_transport: Any, _client: Any) -> None:
            await worker.cancel()

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()
        log.finished.set()

    return app


def stock_twilio(api_url: str) -> Callable[[Any], FrameSerializer]:
    """Pipecat's own serializer, pointed at warmline: base_url, any account, the call's token."""
    def build(call_data: Any) -> FrameSerializer:
        return TwilioFrameSerializer(
            stream_sid=call_data["stream_id"], call_sid=call_data["call_id"],
            account_sid="AC-anything", auth_token=call_data["body"]["call_token"],
            base_url=api_url)
    return build


@dataclass
class Warmline:
    sip: int
    http: int
    workdir: Path

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        database = connect(default_url(self.workdir / "warmline-records"))
        return [(event.kind, event.data) for event in read_events(database)]


async def run_call(tmp_path: Path, app_for: Callable[[str], FastAPI], log: BotLog,
                   human: PjsipPhone | None = None,
                   once_the_bot_is_gone: Callable[[Warmline], Awaitable[None]] | None = None,
                   ) -> tuple[Warmline, PjsipPhone, Path]:
    """warmline (with an API token) streaming to the bot; a PJSIP caller calls the AI.
    ``once_the_bot_is_gone`` runs when the bot's pipeline has finished, warmline still up."""
    bot_port, media = free_port(), relay_block()
    warmline = Warmline(free_port(), free_port(), tmp_path / "warmline")
    warmline.workdir.mkdir()
    token_file = tmp_path / "api-token"
    token_file.write_text(API_TOKEN["Authorization"].removeprefix("Bearer ") + "\n")
    heard_by_caller = tmp_path / "caller.wav"
    bot, bot_task = await start_http(app_for(f"http://127.0.0.1:{warmline.http}"),
                                     "127.0.0.1", bot_port)
    server = start_serve(["--sip", f"udp:127.0.0.1:{warmline.sip}",
                          "--http", f"127.0.0.1:{warmline.http}",
                          "--api-token-file", str(token_file),
                          "--agent-ws", f"ws://127.0.0.1:{bot_port}/ws",
                          "--media-ports", f"{media}-{media + 40}"], warmline.workdir)
    try:
        await asyncio.to_thread(wait_until_serving, server, warmline.http)
        with contextlib.ExitStack() as phones:
            caller = await asyncio.to_thread(phones.enter_context, pjsip_phone(
                tmp_path / "caller", free_port(), user="caller", tone_hz=CALLER_HZ,
                record=heard_by_caller, dial=f"sip:ai@127.0.0.1:{warmline.sip}"))
            await asyncio.wait_for(log.finished.wait(), 20)
            if once_the_bot_is_gone is not None:
                await once_the_bot_is_gone(warmline)
            if human is not None:
                await asyncio.to_thread(human.wait, "done", 15)
            await asyncio.to_thread(caller.wait, "done", 10)
    finally:
        await stop_http(bot, bot_task)
        assert stop_serve(server) == 0
    assert "Traceback" not in server.log(), server.log()[-3000:]
    return warmline, caller, heard_by_caller


async def the_call(warmline: Warmline, state: str) -> dict[str, Any]:
    """The only call, as GET /calls shows it once it is in ``state`` (within 3 s)."""
    async with httpx.AsyncClient(base_url=warmline.api, headers=API_TOKEN) as api:
        for _ in range(60):
            [call] = (await api.get("/calls")).json()
            if call["state"] == state:
                return dict(call)
            await asyncio.sleep(0.05)
    raise AssertionError(f"the call is {call['state']}, not {state}")


async def twilio_update(warmline: Warmline, call_id: str, form: dict[str, str],
                        **auth: Any) -> tuple[int, dict[str, Any]]:
    """Twilio's call update, as Pipecat's serializer sends it (form body, Basic auth)."""
    async with httpx.AsyncClient(base_url=warmline.api) as api:
        answer = await api.post(f"/2010-04-01/Accounts/AC1/Calls/{call_id}.json",
                                data=form, **auth)
    return answer.status_code, answer.json()


def disconnected_at(phone: PjsipPhone) -> float:
    [ended] = [event for event in phone.events("state") if event["state"] == "DISCONNECTED"]
    return float(ended["t"])


@pytest.mark.parametrize("serializer", ["warmline", "stock-twilio"])
def test_a_pipecat_bot_hears_the_caller_answers_and_hangs_up(tmp_path: Path,
                                                            serializer: str) -> None:
    log = BotLog()

    def app_for(api_url: str) -> FastAPI:
        build = (WarmlineFrameSerializer.for_call if serializer == "warmline"
                 else stock_twilio(api_url))
        return bot_app(log, build)

    refusals: dict[str, tuple[int, dict[str, Any]]] = {}

    async def refusals_after_the_end(warmline: Warmline) -> None:
        call = await the_call(warmline, "ended")
        own = {"auth": ("AC1", call["token"])}
        completed = {"Status": "completed"}
        refusals["wrong token"] = await twilio_update(warmline, call["id"], completed,
                                                      auth=("AC1", "a-guess"))
        refusals["ended"] = await twilio_update(warmline, call["id"], completed, **own)
        refusals["unknown"] = await twilio_update(warmline, "call-nope", completed,
                                                  headers=API_TOKEN)
        refusals["canceled"] = await twilio_update(warmline, call["id"],
                                                   {"Status": "canceled"}, **own)
        refusals["redirect"] = await twilio_update(
            warmline, call["id"], {"Status": "completed", "Twiml": "<Response/>"}, **own)

    warmline, caller, heard = asyncio.run(run_call(
        tmp_path, app_for, log, once_the_bot_is_gone=refusals_after_the_end))
    assert log.heard_caller > 0.5, "the bot did not hear the caller's tone"
    assert heard_in(heard, BOT_HZ) > 0.5, "the caller did not hear the bot"
    assert log.ended_at is not None
    bye_after = disconnected_at(caller) - log.ended_at
    assert 0 < bye_after < 1.5, f"the caller's call ended {bye_after:.2f}s after the bot's"
    kinds = [kind for kind, _ in warmline.events()]
    assert kinds.index("call.hangup_requested") < kinds.index("call.ended"), kinds
    [ended] = [data for kind, data in warmline.events() if kind == "call.ended"]
    assert ended["reason"] == "local hangup", ended  # warmline sent the BYE, not the caller
    assert refusals["wrong token"][0] == 401
    status, answer = refusals["ended"]  # Pipecat reads code 20404 as "already hung up"
    assert status == 404 and answer["code"] == 20404 and "has ended" in answer["message"]
    assert refusals["unknown"][0] == 404 and "not known" in refusals["unknown"][1]["message"]
    assert refusals["canceled"][0] == 400 and "Status" in refusals["canceled"][1]["message"]
    assert refusals["redirect"][0] == 400 and "Twiml" in refusals["redirect"][1]["message"]


def test_a_pipecat_bot_transfers_through_its_llm_tool(tmp_path: Path) -> None:
    log = BotLog()
    heard_by_human = tmp_path / "human.wav"
    with pjsip_phone(tmp_path / "human", free_port(), ring_ms=200, hangup_after_ms=2000,
                     tone_hz=HUMAN_HZ, record=heard_by_human) as human:
        late: dict[str, tuple[int, dict[str, Any]]] = {}

        async def a_late_hang_up(warmline: Warmline) -> None:  # a stock serializer's, say
            call = await the_call(warmline, "human")
            late["answer"] = await twilio_update(warmline, call["id"], {"Status": "completed"},
                                                 auth=("AC1", call["token"]))
            async with httpx.AsyncClient(base_url=warmline.api) as api:  # or a plain bot's
                plain = await api.post(f"/calls/{call['id']}/hangup",
                                       headers={"Authorization": f"Bearer {call['token']}"})
            late["plain"] = (plain.status_code, plain.json())

        warmline, caller, heard = asyncio.run(run_call(
            tmp_path, lambda api_url: bot_app(log, WarmlineFrameSerializer.for_call,
                                              transfer_to=human.uri), log, human,
            once_the_bot_is_gone=a_late_hang_up))
    [result] = log.results
    assert result["status"] == "transferring" and result["handoff_id"], result
    assert ("CONFIRMED", 200) in human.states()
    [invite] = human.invites()
    assert "sip:caller@" in invite  # the human's phone shows the caller
    # the bot left when the human took the call, and did not hang the caller up
    assert isinstance(log.serializer, WarmlineFrameSerializer) and log.serializer.stream_stopped
    status, answer = late["answer"]  # refused: the call is the human's now
    assert status == 409 and answer["code"] == 21220 and "human" in answer["message"], answer
    status, answer = late["plain"]  # the bot's token ends only a call with the AI
    assert status == 409 and "human" in answer["detail"], answer
    kinds = [kind for kind, _ in warmline.events()]
    assert "call.hangup_requested" not in kinds, kinds
    human_hung_up = human.wait("hangup")["t"]
    assert disconnected_at(caller) >= human_hung_up  # with the human until they hung up
    assert heard_in(heard, HUMAN_HZ, last_seconds=1) > 0.5, "the caller never heard the human"
    assert heard_in(heard_by_human, CALLER_HZ, last_seconds=1) > 0.5
