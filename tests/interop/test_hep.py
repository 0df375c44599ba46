"""The HEP v3 copy of a call's SIP messages, received by a real sngrep and read back by tshark."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.interop.peers import (
    free_port,
    relay_block,
    render_scenario,
    run_sipp,
    start_serve,
    stop_process,
    stop_serve,
    wait_for_log,
    wait_until_serving,
)
from tests.interop.transfer_peers import caller_hangs_up
from warmline.records.trace_store import TRACE_FILE

pytestmark = pytest.mark.interop


def test_sngrep_receives_every_message_of_a_call_over_hep(tmp_path: Path) -> None:
    sip_port, http_port, hep_port = free_port(), free_port(), free_port()
    media = relay_block()
    (tmp_path / "warmline.toml").write_text(
        f'[trace]\nhep = "udp:127.0.0.1:{hep_port}"\nhep_capture_id = 4242\n')
    captured = tmp_path / "hep.pcap"
    # -N -q: no screen, no output; with -L alone sngrep captures no device: its pcap holds
    # only what arrived over HEP (a run with the copy sent elsewhere finds nothing)
    sngrep = subprocess.Popen(["timeout", "60", "sngrep", "-N", "-q", "-L",
                               f"udp:127.0.0.1:{hep_port}", "-O", str(captured)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    server = start_serve(["--sip", f"udp:127.0.0.1:{sip_port}", "--http",
                          f"127.0.0.1:{http_port}", "--media-ports", f"{media}-{media + 10}",
                          "--config", "warmline.toml"], tmp_path)
    try:
        wait_for_log(server, "a HEP v3 copy of every SIP message")
        wait_until_serving(server, http_port)  # the copy is set up before the listeners
        caller = render_scenario("caller_waits.xml", tmp_path, tail=caller_hangs_up(500),
                                 headers="")
        result = asyncio.run(run_sipp(["-sf", str(caller), f"127.0.0.1:{sip_port}", "-p",
                                       str(free_port()), "-m", "1"], tmp_path, timeout=30))
        assert result.returncode == 0, result.stderr
    finally:
        assert stop_serve(server) == 0, server.log()
        stop_process(sngrep, signal.SIGINT)  # sngrep writes out its capture as it stops
    call_id = _sipp_call_id(tmp_path)
    shown = subprocess.run(
        ["tshark", "-r", str(captured), "-Y", f'sip.Call-ID == "{call_id}"', "-T", "fields",
         "-e", "ip.src", "-e", "udp.srcport", "-e", "ip.dst", "-e", "udp.dstport",
         "-e", "sip.Method", "-e", "sip.Status-Code", "-e", "sip.CSeq.method"],
        capture_output=True, text=True, timeout=30, check=True).stdout.splitlines()
    rows = [line.split("\t") for line in shown]
    seen = [(row[4] or row[5], row[6]) for row in rows]
    for expected in [("INVITE", "INVITE"), ("200", "INVITE"), ("ACK", "ACK"), ("BYE", "BYE"),
                     ("200", "BYE")]:
        assert expected in seen, seen
    invite = next(row for row in rows if row[4] == "INVITE")
    assert invite[2:4] == ["127.0.0.1", str(sip_port)]  # towards warmline, its own address
    ok = next(row for row in rows if row[5] == "200" and row[6] == "INVITE")
    assert ok[0:2] == ["127.0.0.1", str(sip_port)]  # and from it


def _sipp_call_id(workdir: Path) -> str:
    """The Call-ID sipp used, from the server's stored trace (one call: one row)."""
    with contextlib.closing(sqlite3.connect(workdir / "warmline-records" / TRACE_FILE)) as db:
        [(messages,)] = db.execute("SELECT messages FROM trace").fetchall()
    text = json.loads(messages)[0]["text"]
    return next(line.split(":", 1)[1].strip() for line in text.split("\r\n")
                if line.lower().startswith("call-id:"))
