"""RFC 3262 against PJSIP: phones that require 100rel, as the caller and as the human.

The human's phone sends its 180 reliably and will fail the call unless it is
PRACKed; the caller's phone puts Require: 100rel in its INVITE, which used to
be refused 420. Both calls go through and the human is bridged.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.interop.peers import free_port, relay_block, start_serve, stop_serve, wait_until_serving
from tests.interop.pjsip_phone import pjsip_phone

pytestmark = pytest.mark.interop


def test_phones_requiring_100rel_reach_warmline_and_are_reached(tmp_path: Path) -> None:
    sip_port, http_port, media = free_port(), free_port(), relay_block()
    workdir = tmp_path / "warmline"
    workdir.mkdir()
    server = start_serve(["--sip", f"udp:127.0.0.1:{sip_port}", "--http",
                          f"127.0.0.1:{http_port}", "--media-ports",
                          f"{media}-{media + 40}"], workdir)
    try:
        wait_until_serving(server, http_port)
        with pjsip_phone(tmp_path / "human", free_port(), ring_ms=500, hangup_after_ms=800,
                         require_100rel=True, log_level=4) as human, \
                pjsip_phone(tmp_path / "caller", free_port(), user="caller",
                            require_100rel=True,
                            dial=f"sip:ai@127.0.0.1:{sip_port}") as caller:
            api = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=5)
            deadline = time.monotonic() + 10
            while not api.get("/calls").json() and time.monotonic() < deadline:
                time.sleep(0.1)
            [call] = api.get("/calls").json()
            answer = api.post(f"/calls/{call['id']}/transfer",
                              json={"to": human.uri, "mode": "bridge", "timeout": 10})
            assert answer.status_code == 202, answer.text
            human.wait("done", timeout=15)
            handoff = api.get(f"/handoffs/{answer.json()['handoff_id']}").json()
            caller.wait("done", timeout=10)
            [invite] = human.invites()
    finally:
        stop_serve(server)
    assert "100rel" in invite.split("Supported:", 1)[1].splitlines()[0]
    trace = human.text()
    assert "RSeq:" in trace and "PRACK sip:" in trace  # its 180 was reliable, and PRACKed
    assert ("CONFIRMED", 200) in human.states() and ("CONFIRMED", 200) in caller.states()
    kinds = [event["kind"] for event in handoff["events"]]
    assert "connected" in kinds and handoff["status"] == "completed", handoff
    ringing = [event for event in handoff["events"] if event["kind"] == "ringing"]
    assert ringing and ringing[0]["sip_status"] == 180  # the reliable 180, PRACKed
