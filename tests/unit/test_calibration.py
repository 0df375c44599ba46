"""The trigger log and the monthly calibration report built from it."""

from __future__ import annotations

import json
from pathlib import Path

from warmline.brain.calibration import LOG_NAME, TriggerLog, format_report, report
from warmline.brain.triggers import Firing
from warmline.transfer.handoff import Destination, Handoff


def handoff(trigger: str, *steps: str) -> Handoff:
    record = Handoff("call-1", Destination("sip:h@127.0.0.1", "bridge", 5))
    record.emit("triggered", trigger=trigger)
    for step in steps:
        record.emit(step)
    return record


def test_the_report_counts_firings_handoffs_and_what_followed(tmp_path: Path) -> None:
    log = TriggerLog(tmp_path)
    for _ in range(3):
        log.firing("call-1", Firing("sentiment", {"level": 0.7}, 4))
    log.firing("call-2", Firing("explicit_request", {"phrase": "agent"}, 1))
    connected = handoff("sentiment", "connected")
    connected.finish("completed", "the human hung up")
    log.outcome(connected)
    busy = handoff("sentiment", "voicemail_saved")
    busy.finish("completed", "voicemail recorded")
    log.outcome(busy)
    (tmp_path / LOG_NAME).open("a").write("not json\n" + json.dumps([1, 2]) + "\n")
    rows = {row.trigger: row for row in report(tmp_path / LOG_NAME)}
    assert (rows["sentiment"].fired, rows["sentiment"].handoffs,
            rows["sentiment"].reached_a_human) == (3, 2, 1)
    assert rows["sentiment"].next == {"human": 1, "voicemail": 1}
    assert rows["explicit_request"].fired == 1 and rows["explicit_request"].handoffs == 0
    table = format_report(list(rows.values()))
    assert "sentiment" in table and "50%" in table and "voicemail 1" in table
    log.close()  # read above while still open: each line is flushed as written


def test_an_empty_or_missing_log_reports_nothing_fired(tmp_path: Path) -> None:
    assert report(tmp_path / LOG_NAME) == []
    assert format_report([]) == "no trigger has fired yet (the log is empty)"
