"""An external AI on the call through a WebSocket speaking Twilio Media Streams framing.

Existing voice bots (Pipecat and the like) already serialize this framing,
so they can take a warmline call unchanged: warmline connects to the bot's
WebSocket URL and sends ``connected``, ``start`` (streamSid, callSid, the
audio format: 8 kHz mu-law; in customParameters the caller, the call's token
and the URL of warmline's API), then a ``media`` event per 20 ms of the
caller's audio (base64 mu-law), ``dtmf`` when the caller presses a key and
``stop`` at the end. The bot sends ``media`` (audio to play, queued and paced
at 20 ms), ``mark`` (echoed back once the audio before it has been played)
and ``clear`` (drop what is queued: barge-in). Hang-up, transfers and turns
go over the REST API with the call's token (warmline.pipecat wires them into
a Pipecat bot) or the in-process engine, as for any agent.

A bot that sends garbage, or stops reading so that more than a few seconds
of caller audio pile up, is disconnected; the caller keeps hold audio and no
other call notices.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import secrets
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import websockets
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from warmline.agents.host import AgentHost
from warmline.calls.call import Call, CallState
from warmline.media import g711
from warmline.media.plane import Playback
from warmline.media.player import Player, Samples

log = logging.getLogger("warmline.agents")
BACKLOG_FRAMES = 250  # 5 s of caller audio unread by the bot: it has stalled
MAX_MARKS = 1000  # marks waiting to be reached; a bot sending more is broken
_SILENCE = np.zeros(160, dtype=np.int16)


class StreamPlayer(Player):
    """Audio pushed by the bot, played as it comes; marks report when they are reached."""

    def __init__(self, max_seconds: float = 120.0) -> None:
        super().__init__(np.zeros(0, dtype=np.int16))
        self.max_samples = int(max_seconds * 8000)  # queued past this: the bot is broken
        self._chunks: deque[Samples] = deque()
        self._marks: deque[tuple[int, str]] = deque()  # (samples still ahead, name)
        self.queued = 0
        self.on_mark: Any = None  # called with a mark's name once it is reached

    @property
    def finished(self) -> bool:
        return False  # a stream plays (silence) until the call or the bot ends

    def push(self, samples: Samples) -> None:
        """Queue the bot's audio; a bot that sends far ahead of real time is dropped
        (_Misbehaving) rather than allowed to fill memory with minutes of speech."""
        if self.queued + len(samples) > self.max_samples:
            raise _Misbehaving(f"over {self.max_samples // 8000} s of audio queued "
                               "([limits] ws_audio_seconds)")
        self._chunks.append(samples)
        self.queued += len(samples)

    def mark(self, name: str) -> None:
        if len(self._marks) >= MAX_MARKS:
            raise _Misbehaving(f"over {MAX_MARKS} marks waiting")
        self._marks.append((self.queued, name))
        self._reach_marks()

    def clear(self) -> None:
        self._chunks.clear()
        self.queued = 0
        self._marks = deque((0, name) for _, name in self._marks)
        self._reach_marks()

    def next_frame(self) -> Samples:
        needed, parts = 160, []
        while needed and self._chunks:
            chunk = self._chunks[0]
            take = chunk[:needed]
            parts.append(take)
            needed -= len(take)
            if len(take) == len(chunk):
                self._chunks.popleft()
            else:
                self._chunks[0] = chunk[len(take):]
        played = 160 - needed
        self.queued -= played
        self._marks = deque((max(0, ahead - played), name) for ahead, name in self._marks)
        self._reach_marks()
        if needed:
            parts.append(_SILENCE[:needed])
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def _reach_marks(self) -> None:
        while self._marks and self._marks[0][0] <= 0:
            _, name = self._marks.popleft()
            if self.on_mark is not None:
                self.on_mark(name)


class MediaStreamAgent:
    """Connects every call to the bot at ``url`` for as long as the call is with the AI."""

    def __init__(self, engine: AgentHost, url: str, connect_timeout: float = 5.0, *,
                 max_message: int = 65_536, audio_seconds: float = 120.0,
                 api_url: str | None = None) -> None:
        self.engine = engine
        self.url = url
        self.api_url = api_url  # warmline's HTTP API, told to the bot (hang-up, transfer)
        self.connect_timeout = connect_timeout
        self.max_message = max_message  # bytes per message from the bot
        self.audio_seconds = audio_seconds  # the bot's audio queued ahead of playing
        self.sessions = 0
        self.disconnected_for_misbehaving = 0

    def on_call(self, call: Call) -> None:
        self.engine.spawn(self._session(call))

    async def _session(self, call: Call) -> None:
        if call.answered_at is not None and not call.ended:  # back from a handoff: no silence
            call.caller.media.play(Player(self.engine.hold_audio(), loop=True))
        try:
            socket = await websockets.connect(self.url, open_timeout=self.connect_timeout,
                                              max_size=self.max_message)
        except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as error:
            self.engine.answer(call)  # no bot: answered all the same, to hold audio
            log.warning("call %s: bot at %s unreachable (%s); the caller keeps hold audio",
                        call.id, self.url, error, extra={"call_id": call.id})
            if not call.ended:
                call.caller.media.play(Player(self.engine.hold_audio(), loop=True))
            return
        self.engine.answer(call)  # the bot is there: the ringing ends
        self.sessions += 1
        dropped = await run_stream(self.engine, call, socket, self.audio_seconds, self.api_url)
        if dropped is not None:
            self.disconnected_for_misbehaving += 1


@dataclass
class StreamEnd:
    """How a stream ended: dropped for misbehaving, displaced, or closed by the bot."""

    misbehaving: str | None = None  # why the bot was dropped
    displaced: bool = False  # warmline ended it: the call ended or went to someone else
    handed_back: bool = False  # the bot closed with 1000, or asked over REST
    report: str = ""  # what it said when it handed back (close reason or REST summary)


async def run_stream(engine: AgentHost, call: Call, socket: Any,
                     audio_seconds: float = 120.0, api_url: str | None = None) -> str | None:
    """Serve ``call``'s media stream over ``socket`` (ours or the bot's end of it).

    ``socket`` needs ``send(text)``, ``close(code=, reason=)`` and async iteration
    over incoming messages. ``api_url`` (warmline's HTTP API) goes to the bot in
    the ``start`` message. Returns why the bot was dropped, or None. Whatever
    happens, the caller is left with hold audio, never silence.
    """
    stream = CallStream(call, socket, audio_seconds, api_url)
    return (await serve_stream(engine, stream)).misbehaving


async def serve_stream(engine: AgentHost, stream: CallStream) -> StreamEnd:
    """Run ``stream`` until the bot, the call or a newer stream ends it; how it ended."""
    call, socket = stream.call, stream.socket
    end = StreamEnd()
    try:
        await stream.run()
    except _Misbehaving as error:
        log.warning("call %s: bot disconnected: %s", call.id, error,
                    extra={"call_id": call.id})
        await close_quietly(socket, 1008, str(error)[:100])
        end.misbehaving = str(error)
    except (ConnectionClosed, OSError, RuntimeError):
        pass  # the bot went away
    finally:
        stream.stop()
        await close_quietly(socket, 1000, "")
        if stream.owner and not call.ended and call.state is CallState.AI:
            call.caller.media.play(Player(engine.hold_audio(), loop=True))
    end.displaced = stream.stopped_by_us
    if end.misbehaving is None and not end.displaced:
        end.handed_back = stream.handed_back or getattr(socket, "close_code", None) == 1000
        end.report = stream.report or str(getattr(socket, "close_reason", "") or "")
    return end


async def close_quietly(socket: Any, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):  # already closed, one way or another
        await socket.close(code=code, reason=reason)


class _Misbehaving(Exception):
    """The bot broke the protocol or stopped reading."""


class CallStream:
    """One call's stream: caller audio out, bot audio in."""

    def __init__(self, call: Call, socket: Any, audio_seconds: float = 120.0,
                 api_url: str | None = None, parameters: dict[str, str] | None = None, *,
                 awaits_ai: bool = False) -> None:
        self.call = call
        self.awaits_ai = awaits_ai  # opened by a handoff: the call becomes AI once it is up
        self.socket = socket
        self.api_url = api_url
        self.parameters = parameters or {}  # start.customParameters besides the call's own
        self.turn = -1  # the call's agent_turn this stream owns (set when it starts)
        self.stopped_by_us = False  # warmline sent ``stop``: the call ended or moved on
        self.handed_back = False  # the bot asked to hand the caller back (REST)
        self.dismissed = False  # the transfer that opened it let it go
        self.closing: asyncio.Future[None] | None = None  # the close a hand-back started
        self.report = ""
        self.sid = "MZ" + secrets.token_hex(16)
        self.outbound: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.player = StreamPlayer(audio_seconds)
        self.sequence = 0
        self.chunk = 0
        self.playback: Playback | None = None  # the bot's audio on the caller's leg

    @property
    def owner(self) -> bool:
        """Whether this stream is still the call's agent (no newer stream took it)."""
        return self.call.agent_turn == self.turn

    def _done(self) -> bool:
        return self.call.ended or not self.owner or self.dismissed

    def hand_back(self, report: str) -> None:
        """The bot asked over REST to hand the caller back: its stream ends as a close
        with 1000 would end it."""
        self.handed_back, self.report = True, report
        self.closing = asyncio.ensure_future(close_quietly(self.socket, 1000, "handed back"))

    async def run(self) -> None:
        call, leg = self.call, self.call.caller.media
        call.agent_turn += 1  # this stream is the call's agent now; an older one stops
        self.turn = call.agent_turn
        parameters, call.stream_parameters = {**call.stream_parameters, **self.parameters,
                                              **self._parameters()}, {}
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self._send({"event": "start", "start": {
            "streamSid": self.sid, "callSid": self.call.id, "accountSid": "warmline",
            "tracks": ["inbound"], "customParameters": parameters,
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
        self.player.on_mark = lambda name: self.outbound.put_nowait(
            {"event": "mark", "mark": {"name": name}})
        self.playback = leg.play(self.player)
        leg.record(self._caller_audio)
        self.call.on_dtmf = lambda digit: self.outbound.put_nowait(
            {"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": digit}})
        sender = asyncio.ensure_future(self._sender())
        watcher = asyncio.ensure_future(self._until_the_ai_is_done())
        try:
            await self._receive()
        finally:
            sender.cancel()
            watcher.cancel()

    async def _until_the_ai_is_done(self) -> None:
        """Tell the bot ``stop`` and hang up on it when the call ends, a human takes it or
        another agent's stream does (the call's agent_turn moved on). A stream opened for
        a handoff starts while the call is still transferring: it waits for the AI state
        (its transfer sets it once it heard the stream is up) before watching it."""
        call = self.call
        while self.awaits_ai and not self._done() and call.state is not CallState.AI:
            await asyncio.sleep(0.02)
        while not self._done() and call.state is CallState.AI:
            await asyncio.sleep(0.1)
        self.stopped_by_us = True
        with contextlib.suppress(ConnectionClosed, OSError, RuntimeError):
            await self._send({"event": "stop", "stop": {"callSid": self.call.id}})
        await close_quietly(self.socket, 1000, "")

    def stop(self) -> None:
        """The bot's audio stops; whatever the call plays now (ringback, a human, a newer
        stream) goes on."""
        if self.owner:  # a newer stream has the caller's audio and digits now: left alone
            self.call.caller.media.record(None)
            self.call.on_dtmf = None
        if self.playback is not None:
            self.playback.stop()

    def _caller(self) -> str:
        return self.call.caller_uri

    def _parameters(self) -> dict[str, str]:
        """What a Twilio bot finds in ``customParameters``: the caller (also as
        ``from_number``, which Pipecat reads), the call's token, and where to use it."""
        parameters = {"from": self._caller(), "from_number": self._caller(),
                      "call_token": self.call.token}
        if self.api_url is not None:
            parameters["api_url"] = self.api_url
        return parameters

    def _caller_audio(self, samples: Samples) -> None:
        if self.call.state is not CallState.AI or not self.owner:
            return  # with a human: the bot does not listen in
        if self.outbound.qsize() > BACKLOG_FRAMES:
            self.outbound.put_nowait(None)  # tells the sender the bot has stalled
            return
        self.chunk += 1
        self.outbound.put_nowait({"event": "media", "media": {
            "track": "inbound", "chunk": str(self.chunk), "timestamp": str(self.chunk * 20),
            "payload": base64.b64encode(g711.ulaw_encode(samples)).decode()}})

    async def _sender(self) -> None:
        while True:
            message = await self.outbound.get()
            if message is None:
                await close_quietly(self.socket, 1008, "stalled: not reading the audio")
                return
            try:
                await self._send(message)
            except (ConnectionClosed, OSError, RuntimeError):
                return  # the bot went away; the receiving side winds the stream up

    async def _send(self, message: dict[str, Any]) -> None:
        self.sequence += 1
        await self.socket.send(json.dumps({**message, "sequenceNumber": str(self.sequence),
                                           "streamSid": self.sid}))

    async def _receive(self) -> None:
        async for raw in self.socket:
            self._handle(raw)

    def _handle(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
            event = message["event"]
        except (ValueError, KeyError, TypeError):
            raise _Misbehaving("not a Media Streams JSON message") from None
        if event == "media":
            try:
                payload = base64.b64decode(message["media"]["payload"], validate=True)
            except (KeyError, TypeError, binascii.Error):
                raise _Misbehaving("media without a base64 payload") from None
            self.player.push(g711.ulaw_decode(payload))
        elif event == "mark":
            self.player.mark(str(message.get("mark", {}).get("name", "")))
        elif event == "clear":
            self.player.clear()
        else:
            raise _Misbehaving(f"unknown event {event!r}")
