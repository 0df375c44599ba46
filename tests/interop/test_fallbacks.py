"""Nobody answers: the caller leaves a voicemail or is promised a callback, never dropped."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from tests.interop.peers import speech_files
from tests.interop.test_media_bridge import speech_onsets
from tests.interop.transfer_peers import WAIT_FOR_BYE, Human, kinds, run_transfer
from warmline.calls.call import Call
from warmline.media.player import load_wav
from warmline.transfer.handoff import Destination, FallbackAction, Handoff

pytestmark = pytest.mark.interop


def test_busy_then_voicemail_records_what_the_caller_says(tmp_path: Path) -> None:
    speech, _ = speech_files(tmp_path, "Hello, this is Maria, please call me back about my "
                                       "bill. " * 4)
    busy = Human("human_rejects.xml", {"status": "486 Busy Here"})

    def make(call: Call) -> Handoff:
        return Handoff(call.id, Destination(busy.uri, "bridge", 5),
                       fallback=[FallbackAction("voicemail", max_seconds=30)])

    outcome = asyncio.run(run_transfer(tmp_path, "", make, [busy], caller="caller_rtp_stream.xml",
                                       caller_markers={"audio": str(speech),
                                                       "seconds": "9000"}))
    handoff = outcome.handoff
    assert handoff.status == "completed" and handoff.reason == "voicemail recorded"
    saved = next(e for e in handoff.events if e.kind == "voicemail_saved")
    path = Path(saved.detail["path"])
    assert path == tmp_path / "records" / "voicemail" / f"{handoff.id}.wav"
    assert 3.0 < saved.detail["seconds"] < 9.0  # from the tone to the caller's BYE
    assert speech_onsets(path) > 40, "the recording holds little of the caller's speech"
    assert len(load_wav(path, 8000)) == round(saved.detail["seconds"] * 8000)
    assert outcome.legs_left == 0


def test_no_answer_then_a_callback_is_stored_announced_and_the_call_ended(
        tmp_path: Path) -> None:
    busy = Human("human_rejects.xml", {"status": "480 Temporarily Unavailable"})
    asked_at = time.time()

    def make(call: Call) -> Handoff:
        return Handoff(call.id, Destination(busy.uri, "bridge", 5),
                       fallback=[FallbackAction("callback", delay_seconds=600)])

    outcome = asyncio.run(run_transfer(tmp_path, WAIT_FOR_BYE, make, [busy]))
    handoff = outcome.handoff
    assert handoff.status == "completed" and handoff.reason == "callback scheduled"
    assert kinds(handoff)[-2:] == ["callback_scheduled", "completed"]
    [promised] = outcome.engine.callbacks
    assert promised.handoff_id == handoff.id and "caller@" in promised.number
    assert 590 < promised.at - asked_at < 610
    stored = json.loads((tmp_path / "records" / "callbacks.jsonl").read_text())
    assert stored["at"] == promised.at and stored["reason"].startswith("no answer: 480")
    assert outcome.call.ended and outcome.legs_left == 0  # warmline hung up after the promise
