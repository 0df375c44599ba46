"""Early media while the bot connects (RFC 3262, RFC 3960): ringing, not answered silence.

warmline serves calls to a bot on a WebSocket that takes two seconds to
accept. A PJSIP caller that requires 100rel gets a reliable 183 carrying
warmline's SDP answer, PRACKs it, hears ringback on the stream, and is
answered (200) as soon as the bot's handshake completes, well before the
early-media limit.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import threading
import wave
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from tests.interop.peers import (
    engine,
    free_port,
    relay_block,
    start_serve,
    stop_serve,
    wait_until_serving,
)
from tests.interop.pjsip_phone import pjsip_phone
from warmline.calls.call import Call, CallState
from warmline.engine import CallEngine
from warmline.media.relay import EmbeddedRelay, PortRange
from warmline.sip.session import CallAnswered, CallFailed
from warmline.transfer.handoff import Destination, Handoff, HandoffError, Problem

pytestmark = pytest.mark.interop
BOT_DELAY = 2.0  # seconds the bot's WebSocket handshake takes
_WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3


@contextmanager
def slow_bot(port: int) -> Iterator[None]:
    """A WebSocket server that answers the upgrade after BOT_DELAY, then only listens."""
    loop = asyncio.new_event_loop()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await reader.readuntil(b"\r\n\r\n")
        key = next(line.split(b":", 1)[1].strip() for line in request.split(b"\r\n")
                   if line.lower().startswith(b"sec-websocket-key:"))
        accept = base64.b64encode(hashlib.sha1(key + _WS_GUID.encode()).digest())
        await asyncio.sleep(BOT_DELAY)
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                     b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n")
        while await reader.read(4096):
            pass
        writer.close()

    server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", port))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield
    finally:
        loop.call_soon_threadsafe(server.close)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def band(samples: np.ndarray, rate: int, hz: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    return float(spectrum[(freqs > hz - 10) & (freqs < hz + 10)].max()
                 / (np.median(spectrum) + 1e-9))


def test_a_caller_hears_ringback_as_early_media_until_the_bot_is_there(tmp_path: Path) -> None:
    sip_port, http_port, bot_port, media = free_port(), free_port(), free_port(), relay_block()
    workdir = tmp_path / "warmline"
    workdir.mkdir()
    heard = tmp_path / "caller.wav"
    with slow_bot(bot_port):
        server = start_serve(["--sip", f"udp:127.0.0.1:{sip_port}", "--http",
                              f"127.0.0.1:{http_port}", "--media-ports",
                              f"{media}-{media + 40}",
                              "--agent-ws", f"ws://127.0.0.1:{bot_port}/stream"], workdir)
        try:
            wait_until_serving(server, http_port)
            with pjsip_phone(tmp_path / "caller", free_port(), user="caller",
                             require_100rel=True, hangup_after_ms=1000, record=heard,
                             log_level=4, dial=f"sip:ai@127.0.0.1:{sip_port}") as caller:
                caller.wait("done", timeout=15)
        finally:
            stop_serve(server)
    states = caller.events("state")
    early = next(e for e in states if e["state"] == "EARLY" and e["code"] == 183)
    confirmed = next(e for e in states if e["state"] == "CONFIRMED")
    rang_for = confirmed["t"] - early["t"]
    assert BOT_DELAY - 0.5 < rang_for < BOT_DELAY + 2.0, states  # the bot, not the 6 s limit
    trace = caller.text()
    progress = trace[trace.index("SIP/2.0 183"):].split("--end msg--")[0]
    assert "RSeq:" in progress and "m=audio" in progress  # reliable, with our answer
    assert "PRACK sip:" in trace
    with wave.open(str(heard)) as recording:
        rate = recording.getframerate()
        samples = np.frombuffer(recording.readframes(recording.getnframes()), dtype="<i2")
    media = caller.wait("media")  # the recorder starts with the early media stream
    assert media["t"] <= early["t"] + 0.1
    ringing = samples[:int(rate * (confirmed["t"] - media["t"] - 0.2))].astype(np.float64)
    assert len(ringing) > rate  # over a second of audio heard before the 200
    assert band(ringing, rate, 440) > 30 and band(ringing, rate, 480) > 30, \
        "no ringback heard before the answer"


SDP = (b"v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


@pytest.mark.parametrize("while_ringing", ["hang up", "transfer"])
def test_what_the_ai_side_does_while_the_call_still_rings(while_ringing: str,
                                                         tmp_path: Path) -> None:
    """A hang-up while ringing ends the call (480, the leg closed, recorded as ended);
    a transfer asked before the 200 could go (held for the PRACK) is refused 409-style
    and the call is answered as soon as the PRACK comes."""
    seen: dict[str, object] = {}

    async def scenario() -> None:
        base = relay_block()
        relay = EmbeddedRelay("127.0.0.1", PortRange(base, base + 20))
        async with engine("udp") as served, engine("udp") as phone:
            calls = CallEngine(served.shell, relay, "127.0.0.1", ["PCMU"],
                               records_dir=tmp_path / "records", early_media=5.0)

            def on_call(call: Call) -> None:
                seen["call"] = call
                if while_ringing == "hang up":
                    calls.hang_up(call)
                    return
                try:
                    calls.transfer(call.id, Handoff(call.id, Destination(
                        "sip:human@127.0.0.1:9", "blind", 5)))
                except HandoffError as error:
                    seen["refused"] = error

            calls.on_call = on_call
            phone.shell.run(lambda now: phone.shell.ua.invite(
                f"sip:ai@127.0.0.1:{served.spec.port}", now, sdp=SDP))
            await asyncio.sleep(1.0)
            seen["phone"] = [event for _, event in phone.events]
            seen["state"] = seen["call"].state  # type: ignore[attr-defined]
            seen["open"] = seen["call"].caller.media.open  # type: ignore[attr-defined]
            await calls.close()
        await relay.close()

    asyncio.run(scenario())
    call, events = seen["call"], seen["phone"]
    assert isinstance(call, Call) and isinstance(events, list)
    if while_ringing == "hang up":
        [failed] = [e for e in events if isinstance(e, CallFailed)]
        assert failed.status == 480 and not any(isinstance(e, CallAnswered) for e in events)
        assert seen["state"] is CallState.ENDED and seen["open"] is False
        assert call.answered_at is None
    else:
        refused = seen["refused"]
        assert isinstance(refused, HandoffError) and refused.problem is Problem.CONFLICT
        assert "still ringing" in str(refused) and not call.handoff_ids
        assert any(isinstance(e, CallAnswered) for e in events)  # the PRACK let the 200 go
        assert call.answered_at is not None and seen["state"] is CallState.AI
