"""The SIP trace: bounded in memory, written per call, read back by call or handoff id."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from warmline.cli import main
from warmline.records.trace import SipTrace, ladder, pcap
from warmline.records.trace_store import find_trace, write_trace
from warmline.sip.events import Target

PEER = Target("udp", "192.0.2.10", 5060)


def message(start: str, call_id: str, size: int = 0) -> bytes:
    return (f"{start}\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: {size}\r\n\r\n"
            + "x" * size).encode()


def test_the_trace_is_bounded_in_calls_messages_and_bytes() -> None:
    trace = SipTrace(max_calls=2, max_messages=3, max_bytes=200)
    for _ in range(5):
        trace.tap("in", message("INVITE sip:ai@127.0.0.1 SIP/2.0", "abc"), PEER)
    trace.tap("out", message("SIP/2.0 200 OK", "abc", size=5000), PEER)
    trace.tap("in", message("OPTIONS sip:ai@127.0.0.1 SIP/2.0", "other"), PEER)
    trace.tap("in", message("OPTIONS sip:ai@127.0.0.1 SIP/2.0", "third"), PEER)  # evicts abc
    assert trace.take(["abc"]) == []
    kept = trace.take(["other", "third"])
    assert [m.summary for m in kept] == ["OPTIONS", "OPTIONS"]
    trace.tap("in", message("SIP/2.0 180 Ringing", "big", size=5000), PEER)
    [big] = trace.take(["big"])
    assert len(big.text) == 200 and big.summary == "180 Ringing"
    trace.tap("in", b"garbage without a call id", PEER)
    assert trace.take(["garbage"]) == []
    small = SipTrace(max_total=3000)  # the bytes held in all are bounded too
    for n in range(20):
        small.tap("in", message("INVITE sip:ai@127.0.0.1 SIP/2.0", f"c{n}", size=500), PEER)
    assert small._total <= 3000 and small.take(["c0"]) == [] and small.take(["c19"])



def test_the_call_id_is_found_however_the_header_is_spelled() -> None:
    """Header names are case-insensitive and Call-ID has a compact form (RFC 3261 7.3.1,
    20.8); "Call-ID:" inside the start line is not the header."""
    trace = SipTrace()
    for name, call_id in [("call-id", "lower"), ("CALL-ID", "upper"), ("i", "compact"),
                          ("I", "compact-upper"), ("Call-ID ", "spaced")]:
        trace.tap("in", message("OPTIONS sip:ai@127.0.0.1 SIP/2.0", "x").replace(
            b"Call-ID: x", f"{name}: {call_id}".encode()), PEER)
        assert [m.summary for m in trace.take([call_id])] == ["OPTIONS"], name
    trace.tap("in", b"OPTIONS sip:Call-ID:x@h SIP/2.0\r\nCSeq: 1 OPTIONS\r\n\r\n", PEER)
    assert trace._by_call_id == {}

def test_a_trace_is_found_by_call_or_handoff_and_shown_as_a_ladder(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = SipTrace()
    trace.tap("in", message("INVITE sip:ai@127.0.0.1 SIP/2.0", "leg-1"), PEER)
    trace.tap("out", message("SIP/2.0 200 OK", "leg-1"), PEER)
    trace.tap("out", message("INVITE sip:human@192.0.2.20 SIP/2.0", "leg-2"),
              Target("udp", "192.0.2.20", 5060))
    write_trace(tmp_path, "call-1a2b", ["handoff-9f"], trace.take(["leg-1", "leg-2"]))
    call_id, messages = find_trace(tmp_path, "handoff-9f")
    assert call_id == "call-1a2b" and len(messages) == 3
    shown = ladder(messages)
    assert "192.0.2.10:5060 ──INVITE──▶ warmline" in shown
    assert "192.0.2.20:5060 ◀──INVITE── warmline" in shown
    with pytest.raises(LookupError, match="no SIP trace for call-nope"):
        find_trace(tmp_path, "call-nope")
    with pytest.raises(ValueError):
        write_trace(tmp_path, "../escape", [], [])
    out = tmp_path / "call.pcap"
    assert main(["trace", "call-1a2b", "--records", str(tmp_path), "--pcap", str(out)]) == 0
    assert "SIP trace of call-1a2b (3 messages)" in capsys.readouterr().out
    assert main(["trace", "call-missing", "--records", str(tmp_path)]) == 1


def test_the_pcap_opens_in_tshark(tmp_path: Path) -> None:
    trace = SipTrace()
    trace.tap("in", message("INVITE sip:ai@127.0.0.1 SIP/2.0", "leg-1"), PEER)
    trace.tap("out", message("SIP/2.0 200 OK", "leg-1"), PEER)
    data = pcap(trace.take(["leg-1"]), ("127.0.0.1", 5070))
    magic, _, _, _, _, _, linktype = struct.unpack("<IHHiIII", data[:24])
    assert (magic, linktype) == (0xA1B2C3D4, 101)
    path = tmp_path / "leg.pcap"
    path.write_bytes(data)
    tshark = shutil.which("tshark")
    assert tshark, "tshark is installed by scripts/setup"
    shown = subprocess.run([tshark, "-r", str(path), "-Y", "sip", "-T", "fields",
                            "-e", "sip.Method", "-e", "sip.Status-Code"],
                           capture_output=True, text=True, timeout=30, check=True).stdout
    assert shown.split() == ["INVITE", "200"]
