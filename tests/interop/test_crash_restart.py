"""warmline is killed mid-transfer (kill -9) and started again: it ends what it left up.

Two PJSIP phones, a caller and a human, with session timers off, so nothing but
warmline's dialog journal can end their calls in time. The process dies with a
bridge up, or with the human in a warm-transfer consult, and a new process on
the same records folder and SIP port BYEs each leg the old one owned, with a
Reason, within seconds of starting.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.interop.peers import free_port, relay_block, start_serve, stop_serve, wait_until_serving
from tests.interop.pjsip_phone import pjsip_phone
from tests.interop.test_session_timers import disconnected, wait_for

pytestmark = pytest.mark.interop


@pytest.mark.parametrize(("transfer", "state"), [
    ({"mode": "bridge", "timeout": 10}, "human"),
    ({"mode": "warm", "timeout": 10, "accept": "dtmf", "accept_timeout": 60,
      "whisper": "a caller about billing"}, "transferring"),
], ids=["bridge", "warm-consult"])
def test_a_restart_after_kill_9_ends_every_leg_the_dead_run_left_up(
        tmp_path: Path, transfer: dict[str, Any], state: str) -> None:
    sip_port, http_port, media = free_port(), free_port(), relay_block()
    config = tmp_path / "warmline.toml"
    config.write_text("[sip]\nsession_expires = 0\n")
    workdir = tmp_path / "warmline"
    workdir.mkdir()
    args = ["--config", str(config), "--sip", f"udp:127.0.0.1:{sip_port}",
            "--http", f"127.0.0.1:{http_port}", "--media-ports", f"{media}-{media + 40}"]
    server = start_serve(args, workdir)
    restarted = None
    try:
        wait_until_serving(server, http_port)
        with pjsip_phone(tmp_path / "human", free_port(), ring_ms=100, lifetime=90) as human, \
                pjsip_phone(tmp_path / "caller", free_port(), lifetime=90, user="caller",
                            dial=f"sip:ai@127.0.0.1:{sip_port}") as caller:
            api = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=5)
            wait_for(lambda: api.get("/calls").json(), "the caller's call", 10)
            [call] = api.get("/calls").json()
            answer = api.post(f"/calls/{call['id']}/transfer", json={"to": human.uri, **transfer})
            assert answer.status_code == 202, answer.text
            wait_for(lambda: human.states() and human.states()[-1][0] == "CONFIRMED"
                     and api.get("/calls").json()[0]["state"] == state,
                     f"the human on the line ({state})", 15)
            os.kill(server.process.pid, signal.SIGKILL)  # no BYE, no shutdown: gone
            server.process.wait(5)
            time.sleep(2)
            assert not disconnected(caller) and not disconnected(human)  # nothing ends them
            (workdir / "serve.log").rename(workdir / "killed.log")
            restarted = start_serve(args, workdir)
            started = time.monotonic()
            wait_for(lambda: disconnected(caller) and disconnected(human),
                     "both phones to be hung up by the new run", 10)
            ended_within = time.monotonic() - started
            wait_for(lambda: "ended a call the last run left up" in restarted.log(),
                     "the BYEs answered", 5)
    finally:
        stop_serve(server)
        if restarted is not None:
            assert stop_serve(restarted) == 0
    assert ended_within < 10
    assert "ending 2 call(s) the last run left up" in restarted.log()
    for phone in (caller, human):  # hung up by a BYE, not by a timer of its own
        assert phone.states()[-1][1] != 408, phone.states()
