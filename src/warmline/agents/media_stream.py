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


async def run_stream(engine: AgentHost, call: Call, socket: Any,
                     audio_seconds: float = 120.0, api_url: str | None = None) -> str | None:
    """Serve ``call``'s media stream over ``socket`` (ours or the bot's end of it).

    ``socket`` needs ``send(text)``, ``close(code=, reason=)`` and async iteration
    over incoming messages. ``api_url`` (warmline's HTTP API) goes to the bot in
    the ``start`` message. Returns why the bot was dropped, or None. Whatever
    happens, the caller is left with hold audio, never silence.
    """
    stream = _Stream(call, socket, audio_seconds, api_url)
    try:
        await stream.run()
    except _Misbehaving as error:
        log.warning("call %s: bot disconnected: %s", call.id, error,
                    extra={"call_id": call.id})
        await _close(socket, 1008, str(error)[:100])
        return str(error)
    except (ConnectionClosed, OSError, RuntimeError):
        pass  # the bot went away
    finally:
        stream.stop()
        await _close(socket, 1000, "")
        if not call.ended and call.state is CallState.AI:
            call.caller.media.play(Player(engine.hold_audio(), loop=True))
    return None


async def _close(socket: Any, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):  # already closed, one way or another
        await socket.close(code=code, reason=reason)


class _Misbehaving(Exception):
    """The bot broke the protocol or stopped reading."""


class _Stream:
    """One call's stream: caller audio out, bot audio in."""

    def __init__(self, call: Call, socket: Any, audio_seconds: float = 120.0,
                 api_url: str | None = None) -> None:
        self.call = call
        self.socket = socket
        self.api_url = api_url
        self.sid = "MZ" + secrets.token_hex(16)
        self.outbound: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self.player = StreamPlayer(audio_seconds)
        self.sequence = 0
        self.chunk = 0
        self.playback: Playback | None = None  # the bot's audio on the caller's leg

    async def run(self) -> None:
        leg = self.call.caller.media
        await self._send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self._send({"event": "start", "start": {
            "streamSid": self.sid, "callSid": self.call.id, "accountSid": "warmline",
            "tracks": ["inbound"], "customParameters": self._parameters(),
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
        """Tell the bot ``stop`` and hang up on it when the call ends or a human takes it."""
        while not self.call.ended and self.call.state is CallState.AI:
            await asyncio.sleep(0.1)
        with contextlib.suppress(ConnectionClosed, OSError, RuntimeError):
            await self._send({"event": "stop", "stop": {"callSid": self.call.id}})
        await _close(self.socket, 1000, "")

    def stop(self) -> None:
        """The bot's audio stops; whatever the call plays now (ringback, a human) goes on."""
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
        if self.call.state is not CallState.AI:
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
                await _close(self.socket, 1008, "stalled: not reading the audio")
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
