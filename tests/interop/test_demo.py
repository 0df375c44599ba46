"""`warmline demo`, the README's main command, runs a whole escalation and exits 0."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from warmline.media.player import load_wav

pytestmark = pytest.mark.interop


def test_the_demo_runs_an_escalation_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    done = subprocess.run([sys.executable, "-m", "warmline", "demo", "--out", str(out)],
                          capture_output=True, text=True, timeout=150, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for line in ("SIP ladder", "human ◀──INVITE── warmline",
                 "What the human's phone received before answering",
                 "X-Warmline-Intent: billing_dispute"):
        assert line in done.stdout, line
    assert re.search(r"Handoff handoff-[0-9a-f]{16}: completed", done.stdout)
    figures = json.loads((out / "report.json").read_text())
    assert figures["status"] == "completed" and figures["largest_gap_ms"] < 60
    assert figures["human_received_uui"]["i"] == "billing_dispute"
    assert figures["trigger"]["name"] == "explicit_request"
    assert 0 < figures["trigger_to_human_first_word_s"] < 15
    assert len(load_wav(out / "human_heard.wav", 8000)) > 8000 * 3  # whisper + the caller
    report = (out / "report.html").read_text()
    assert "<audio" in report and "Handoff timeline" in report
    assert "<td>connected</td>" in report and "<td>human_first_word</td>" in report
    # it says what happens as it happens, not after a silent half minute
    lines = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert lines[0].endswith("making the voices (espeak-ng) ...")
    assert any("fired: warm transfer to the human" in line for line in lines)
    assert all(float(line[1:6]) < 30 for line in lines[:3])
    assert "KPIs from the records" in done.stdout and "transfer share 100%" in done.stdout
