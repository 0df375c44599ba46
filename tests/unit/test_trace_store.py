"""Ended calls' SIP traces in traces.sqlite: batched off the loop, found by call or
handoff id, a comeback call's rows joined, old ones deleted, a stalled disk bounded."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import os
import pickle
import time
from pathlib import Path

import pytest

from warmline.brain.redact import CARD, redact
from warmline.records import trace_writer
from warmline.records.child import function_name
from warmline.records.trace import TracedMessage
from warmline.records.trace_keeper import keep
from warmline.records.trace_store import TraceRow, TraceStore, find_trace
from warmline.records.trace_writer import BATCH_WAIT, PROCESS_BATCH, TraceWriter


def message(at: float, start: str, call_id: str = "leg-1") -> TracedMessage:
    text = f"{start}\r\nCall-ID: {call_id}\r\nFrom: <sip:+15551234567@pbx>\r\n\r\n"
    return TracedMessage(at, "in", "udp", "192.0.2.10", 5060, text)


def test_a_trace_is_found_by_its_call_or_any_handoff_and_old_ones_are_deleted(
        tmp_path: Path) -> None:
    store = TraceStore(tmp_path)
    now = time.time()
    store.add([TraceRow("call-1", ("handoff-a", "handoff-b"), [message(now, "INVITE x")], now),
               TraceRow("call-2", (), [message(now, "OPTIONS x")], now - 30 * 86400)])
    # the same call adopted back later: a second row, read as one trace in time order
    store.add([TraceRow("call-1", ("handoff-c",), [message(now - 1, "BYE x"),
                                                    message(now + 1, "SIP/2.0 200 OK")], now)])
    call_id, messages = find_trace(tmp_path, "handoff-b")
    assert call_id == "call-1"
    assert [m.summary for m in messages] == ["BYE", "INVITE", "200 OK"]
    assert find_trace(tmp_path, "handoff-c")[1] == messages == find_trace(tmp_path, "call-1")[1]
    assert store.forget_before(now - 86400) == 1
    with pytest.raises(LookupError, match="no SIP trace for call-2"):
        find_trace(tmp_path, "call-2")
    assert store.count() == 2
    store.close()


def test_a_trace_the_first_version_wrote_as_a_file_is_still_found(tmp_path: Path) -> None:
    folder = tmp_path / "traces"
    folder.mkdir()
    old = message(1.0, "INVITE sip:ai@127.0.0.1 SIP/2.0")
    (folder / "call-old.jsonl").write_text(
        json.dumps({"call_id": "call-old", "handoff_ids": []}) + "\n" + old.as_json() + "\n")
    assert find_trace(tmp_path, "call-old") == ("call-old", [old])
    with pytest.raises(LookupError):
        find_trace(tmp_path, "../traces/call-old")


def dies_in_a_child(text: str) -> str:
    """A redaction that kills the keeper process it runs in (and passes in the engine's)."""
    if str(os.getpid()) != os.environ.get("WARMLINE_TEST_ENGINE_PID"):
        os._exit(3)
    return text


def write_all(writer: TraceWriter, count: int, start: str = "INVITE x") -> list[str]:
    written: list[str] = []
    for n in range(count):
        writer.write(f"call-{n}", [f"handoff-{n}"],
                     [message(n, f"{start}\r\nX-Card: 4111 1111 1111 1111", f"leg-{n}")],
                     written.append)
    return written


def test_a_few_traces_go_to_a_thread_and_are_shown_until_stored(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[str], int, bool, bool]:
        writer = TraceWriter(tmp_path, lambda text: text.replace("+15551234567", "[phone]"))
        written = write_all(writer, PROCESS_BATCH - 1)
        # until the loop hears it was stored, every trace is still shown from memory
        shown = all(f"call-{n}" in writer.writing for n in range(PROCESS_BATCH - 1))
        await writer.close()
        return written, writer.stored, shown, writer.keeper is None

    written, stored, shown, no_process = asyncio.run(scenario())
    assert sorted(written) == sorted(f"call-{n}" for n in range(PROCESS_BATCH - 1))
    assert stored == PROCESS_BATCH - 1 and shown and no_process
    call_id, [stored_message] = find_trace(tmp_path, "handoff-7")
    assert call_id == "call-7" and "[phone]" in stored_message.text


def test_a_busy_node_redacts_and_stores_in_a_process_of_its_own(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[str], int, bool]:
        writer = TraceWriter(tmp_path, redact)
        written = write_all(writer, 200)
        await asyncio.sleep(BATCH_WAIT * 2)
        started = writer.keeper is not None
        await writer.close()
        return written, writer.stored, started

    written, stored, started = asyncio.run(scenario())
    assert started and stored == 200 and len(set(written)) == 200
    call_id, [stored_message] = find_trace(tmp_path, "handoff-150")
    assert call_id == "call-150" and CARD in stored_message.text
    assert "4111" not in stored_message.text


def test_a_keeper_process_that_dies_hands_its_batch_to_the_thread(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WARMLINE_TEST_ENGINE_PID", str(os.getpid()))
    async def scenario() -> tuple[list[str], int]:
        writer = TraceWriter(tmp_path, dies_in_a_child)
        written = write_all(writer, 60)
        for _ in range(100):  # the batch goes to a keeper, which dies on it
            await asyncio.sleep(0.05)
            if writer.stored:
                break
        await writer.close()
        return written, writer.stored

    with caplog.at_level(logging.WARNING, "warmline.records"):
        written, stored = asyncio.run(scenario())
    assert stored == 60 and len(set(written)) == 60
    assert "the SIP trace keeper exited" in caplog.text
    assert find_trace(tmp_path, "handoff-59")[0] == "call-59"


def test_the_writer_deletes_what_is_past_keep_days(tmp_path: Path) -> None:
    store = TraceStore(tmp_path)
    store.add([TraceRow("call-old", ("handoff-old",), [message(1.0, "INVITE x")],
                        time.time() - 20 * 86400)])
    store.close()
    files = tmp_path / "traces"  # the first version's files: the old one goes too
    files.mkdir()
    for name, age_days in (("call-v1-old", 20), ("call-v1-new", 1)):
        path = files / f"{name}.jsonl"
        path.write_text(json.dumps({"call_id": name, "handoff_ids": []}) + "\n")
        then = time.time() - age_days * 86400
        os.utime(path, (then, then))

    async def scenario() -> None:
        writer = TraceWriter(tmp_path, lambda text: text)
        writer.write("call-new", [], [message(2.0, "INVITE y")], lambda call_id: None)
        writer.sweep(14.0)
        await writer.close()

    asyncio.run(scenario())
    with pytest.raises(LookupError):
        find_trace(tmp_path, "handoff-old")
    assert find_trace(tmp_path, "call-new")[0] == "call-new"
    assert sorted(path.name for path in files.iterdir()) == ["call-v1-new.jsonl"]


def test_a_writer_that_cannot_store_logs_it_and_memory_stays_bounded(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "records"
    blocked.write_text("a file where the records folder should be")
    monkeypatch.setattr(trace_writer, "MAX_WAITING", 3)

    async def scenario() -> tuple[list[str], int, int]:
        writer = TraceWriter(blocked, lambda text: text)
        written = write_all(writer, 5)  # nothing sent yet: three wait, two are dropped
        dropped = writer.dropped
        await writer.close()
        return written, dropped, writer.stored

    with caplog.at_level(logging.WARNING, "warmline.records"):
        written, dropped, stored = asyncio.run(scenario())
    assert dropped == 2 and stored == 0
    assert sorted(written) == [f"call-{n}" for n in range(5)]
    assert "SIP traces dropped" in caplog.text and "not stored" in caplog.text


def test_the_keeper_reports_each_batch_in_order_and_a_failure_in_one_line(
        tmp_path: Path) -> None:
    def frame(raw: list[trace_writer.RawTrace]) -> bytes:
        body = pickle.dumps(raw)
        return len(body).to_bytes(4, "big") + body

    good = [("call-1", ("handoff-1",), [(1.0, "in", "udp", "192.0.2.1", 5060, "INVITE x")])]
    out = io.StringIO()
    keep(tmp_path, redact, io.BytesIO(frame(good) + frame(good)), out)
    assert out.getvalue() == "stored 1\nstored 1\n"
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where a folder should be")
    out = io.StringIO()
    keep(blocked, redact, io.BytesIO(frame(good)), out)
    assert out.getvalue().startswith("failed 1 ") and out.getvalue().count("\n") == 1


def test_only_a_function_found_by_name_goes_to_the_keeper() -> None:
    assert function_name(redact) == "warmline.brain.redact:redact"
    assert function_name(lambda text: text) is None
    assert function_name(str.upper) is None  # a builtin's module does not name it
