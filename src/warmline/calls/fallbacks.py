"""Where a caller goes when no human could be reached: voicemail or a scheduled callback.

Both end the handoff with the caller served, never in silence: voicemail
plays a prompt and a tone, records what the caller says to a WAV file named
after the handoff (until they hang up or the limit), thanks them and hangs
up; a callback is stored with its time (in memory and appended to a JSON
Lines file, so a crash loses nothing already promised), announced to the
caller with that time, and the call ends politely.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from warmline.calls.handoff import FallbackAction, Handoff
from warmline.media.player import Player, Samples, save_wav
from warmline.media.tts import TtsError

if TYPE_CHECKING:
    from warmline.calls.engine import Call, CallEngine

_TONE = (np.sin(2 * np.pi * 1000 * np.arange(3200) / 8000) * 8000).astype(np.int16)


@dataclass(frozen=True)
class ScheduledCallback:
    handoff_id: str
    call_id: str
    number: str
    at: float
    reason: str


async def say(engine: CallEngine, call: Call, text: str, extra: Samples | None = None) -> None:
    """Speak ``text`` to the caller (and then ``extra``, a tone say) and wait till it ends."""
    loop = asyncio.get_running_loop()
    try:
        speech = await loop.run_in_executor(None, engine.tts.synthesize, text)
    except TtsError:
        speech = np.zeros(0, dtype=np.int16)
    if extra is not None:
        speech = np.concatenate([speech, extra])
    if call.ended or not len(speech):
        return
    await call.caller.media.play(Player(speech)).done


async def voicemail(engine: CallEngine, call: Call, handoff: Handoff,
                    action: FallbackAction) -> None:
    """Prompt, tone, record to ``records_dir/voicemail/<handoff>.wav``, thank, hang up."""
    handoff.emit("voicemail_started", max_seconds=action.max_seconds)
    await say(engine, call, "Nobody can take your call right now. Please leave a message "
                             "after the tone.", _TONE)
    frames: list[Samples] = []
    leg = call.caller.media
    leg.listen_to(None)
    leg.record(frames.append)
    deadline = time.monotonic() + action.max_seconds
    while not call.ended and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    leg.record(None)
    path = engine.records_dir / "voicemail" / f"{handoff.id}.wav"
    seconds = save_wav(path, frames)
    handoff.emit("voicemail_saved", path=str(path), seconds=round(seconds, 2))
    handoff.finish("completed", "voicemail recorded", handoff.sip_status)
    if not call.ended:
        await say(engine, call, "Thank you. Goodbye.")
        engine.hang_up(call)


async def callback(engine: CallEngine, call: Call, handoff: Handoff,
                   action: FallbackAction) -> None:
    """Store a callback with its time, tell the caller when, and end the call."""
    at = action.at if action.at is not None else time.time() + action.delay_seconds
    number = str(call.caller.session.remote_party.uri)
    scheduled = ScheduledCallback(handoff.id, call.id, number, at, handoff.reason or "")
    engine.callbacks.append(scheduled)
    path = engine.records_dir / "callbacks.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as log:
        log.write(json.dumps(asdict(scheduled)) + "\n")
    handoff.emit("callback_scheduled", at=at, number=number)
    handoff.finish("completed", "callback scheduled", handoff.sip_status)
    when = time.strftime("%H:%M", time.localtime(at))
    await say(engine, call, f"Nobody can take your call right now. We will call you back "
                             f"at {when}. Goodbye.")
    if not call.ended:
        engine.hang_up(call)
