"""warmline dies mid-call (kill -9): real phones end their legs themselves (RFC 4028).

Two PJSIP phones, a caller and a human, both with session timers on (90 s,
the RFC's floor). The caller reaches warmline, warmline bridges it to the
human, and then its process is killed without a chance to say BYE. The
session timers negotiated on both legs are what ends them: the caller's
refresh goes unanswered, the human's phone hears no refresh from warmline,
and each hangs up within the 90 s interval instead of staying "on a call"
forever.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.interop.peers import free_port, relay_block, start_serve, stop_serve, wait_until_serving
from tests.interop.pjsip_phone import PjsipPhone, pjsip_phone

pytestmark = pytest.mark.interop
INTERVAL = 90  # seconds: RFC 4028's smallest Min-SE, and PJSIP's


def disconnected(phone: PjsipPhone) -> bool:
    return any(state.startswith("DISCONN") for state, _ in phone.states())


def wait_for(check: object, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_after_kill_9_both_phones_end_their_legs_within_the_session_interval(
        tmp_path: Path) -> None:
    sip_port, http_port, media = free_port(), free_port(), relay_block()
    config = tmp_path / "warmline.toml"
    config.write_text(f"[sip]\nsession_expires = {INTERVAL}\nmin_se = 90\n")
    workdir = tmp_path / "warmline"
    workdir.mkdir()
    server = start_serve(["--config", str(config), "--sip", f"udp:127.0.0.1:{sip_port}",
                          "--http", f"127.0.0.1:{http_port}",
                          "--media-ports", f"{media}-{media + 40}"], workdir)
    try:
        wait_until_serving(server, http_port)
        with pjsip_phone(tmp_path / "human", free_port(), ring_ms=100, lifetime=180,
                         session_expires=INTERVAL) as human, \
                pjsip_phone(tmp_path / "caller", free_port(), lifetime=180, user="caller",
                            session_expires=INTERVAL,
                            dial=f"sip:ai@127.0.0.1:{sip_port}") as caller:
            api = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=5)
            wait_for(lambda: api.get("/calls").json(), "the caller's call", 10)
            [call] = api.get("/calls").json()
            answer = api.post(f"/calls/{call['id']}/transfer",
                              json={"to": human.uri, "mode": "bridge", "timeout": 10})
            assert answer.status_code == 202, answer.text
            wait_for(lambda: api.get("/calls").json()[0]["state"] == "human",
                     "the bridge to the human", 10)
            os.kill(server.process.pid, signal.SIGKILL)  # no BYE, no shutdown: gone
            killed = time.monotonic()
            wait_for(lambda: disconnected(caller) and disconnected(human),
                     "both phones to end their legs", INTERVAL + 20)
            ended_within = time.monotonic() - killed
            invites = human.invites()
    finally:
        stop_serve(server)
    # PJSIP hangs up when the interval has run out (RFC 4028 §10 would let it go 30 s
    # earlier) and checks about once a second: the interval, plus a few seconds
    assert ended_within <= INTERVAL + 5, f"the legs lasted {ended_within:.0f} s after the kill"
    assert f"Session-Expires: {INTERVAL}" in invites[0]  # warmline offered the timer
    for phone in (caller, human):  # each ended it for want of a refresh, not by a BYE
        assert phone.states()[-1] == ("DISCONNECTED", 408), phone.states()
