"""Session rules of the SIP core checked against real sipp peers and a real `warmline serve`.

What is proved, each from the messages sipp saw (its -trace_msg log, parsed
here) and warmline's own records, never from warmline's code:

1. RFC 4028 §6/§7.3: a Session-Expires below warmline's configured Min-SE is
   refused 422 with that Min-SE; the caller's retry (same Call-ID, next CSeq)
   at exactly that Min-SE is answered 200 granting that interval.
2. RFC 4028 §10: a caller that made itself the refresher (refresher=uac) and
   never refreshes is hung up by warmline with a BYE before the interval is
   over (at about interval - min(32 s, interval / 3)).
3. RFC 4488: a blind-transfer REFER answered 202 with Refer-Sub: false gets no
   NOTIFY; warmline does not wait for one: the transferee hanging up the
   original call completes the handoff at once ("transferred ... Refer-Sub
   false"), and warmline sends nothing more on that dialog.
4. RFC 3891 §3: an INVITE whose Replaces names no dialog of warmline's (an
   unknown one, or a real dialog with the wrong from-tag) is refused 481 and
   does not become a call; a Replaces that does not parse gets 400 (it used to
   get 100 Trying and then nothing).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.interop.peers import (
    ServeProcess,
    SippResult,
    free_port,
    relay_block,
    render_scenario,
    run_sipp,
    start_serve,
    stop_serve,
    wait_for_log,
)
from warmline.transfer.blind import UNSUBSCRIBED

pytestmark = pytest.mark.interop

# ---------------------------------------------------------------- sipp's message trace

_TRACE_ENTRY = re.compile(
    r"^-{47} (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+)\n(?:UDP|TCP) message (sent|received)[^\n]*\n\n"
    r"(.*?)(?=^-{47}|\Z)", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Traced:
    """One SIP message sipp sent or received, with sipp's (local wall-clock) time."""

    at: float  # Unix time
    sent: bool  # by sipp; False: received from warmline
    text: str

    @property
    def start_line(self) -> str:
        return self.text.split("\n", 1)[0].strip()

    @property
    def status(self) -> int | None:
        parts = self.start_line.split(" ", 2)
        return int(parts[1]) if parts[0] == "SIP/2.0" else None

    @property
    def method(self) -> str | None:
        return None if self.status is not None else self.start_line.split(" ", 1)[0]

    def header(self, name: str) -> str | None:
        """The first header called ``name`` (compared case-insensitively, RFC 3261 §7.3.1)."""
        for line in self.text.split("\n\n", 1)[0].split("\n")[1:]:
            key, colon, value = line.partition(":")
            if colon and key.strip().lower() == name.lower():
                return value.strip()
        return None

    @property
    def cseq(self) -> tuple[int, str]:
        number, method = (self.header("CSeq") or "0 ?").split()
        return int(number), method


def read_trace(workdir: Path) -> list[Traced]:
    [log] = workdir.glob("*_messages.log")
    text = log.read_text(errors="replace").replace("\r\n", "\n")
    return [Traced(datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S.%f").timestamp(),
                   direction == "sent", body.strip("\n") + "\n")
            for stamp, direction, body in _TRACE_ENTRY.findall(text)]


def finals_to(trace: list[Traced], call_id: str, method: str) -> dict[int, int]:
    """CSeq number -> the final status warmline answered (retransmissions folded)."""
    return {m.cseq[0]: m.status for m in trace
            if not m.sent and m.status is not None and m.status >= 200
            and m.cseq[1] == method and m.header("Call-ID") == call_id}


async def sipp_calls(scenario: Path, port: int, workdir: Path, timeout: float) -> SippResult:
    """One sipp call, every message traced (-trace_msg) and its <log> lines kept."""
    return await run_sipp(["-sf", str(scenario), f"127.0.0.1:{port}", "-p", str(free_port()),
                           "-m", "1", "-trace_msg", "-trace_logs"], workdir, timeout=timeout)


# ---------------------------------------------------------------- warmline serve


@dataclass
class Served:
    process: ServeProcess
    sip_port: int
    http_port: int | None
    stopped_with: int | None = None

    def log(self) -> str:
        return self.process.log()


@contextlib.contextmanager
def warmline(tmp_path: Path, config: str, http: bool = False) -> Iterator[Served]:
    """`warmline serve` on UDP (with the HTTP API and media when ``http``), stopped by PID."""
    workdir = tmp_path / "warmline"
    workdir.mkdir()
    config_path = workdir / "warmline.toml"
    config_path.write_text(config)
    sip_port = free_port()
    args = ["--config", str(config_path), "--sip", f"udp:127.0.0.1:{sip_port}"]
    http_port = None
    if http:
        http_port, media = free_port(), relay_block()
        args += ["--http", f"127.0.0.1:{http_port}", "--media-ports", f"{media}-{media + 40}"]
    served = Served(start_serve(args, workdir), sip_port, http_port)
    try:
        if http:
            wait_for_log(served.process, "HTTP API")
        # the SIP listeners open after the HTTP API: a request sent before is lost
        wait_for_log(served.process, f"listening on udp:127.0.0.1:{sip_port}")
        yield served
    finally:
        served.stopped_with = stop_serve(served.process)


def assert_clean(served: Served) -> None:
    log = served.log()
    assert served.stopped_with == 0, log
    assert "internal error" not in log and "Traceback" not in log, log


# ---------------------------------------------------------------- 1. 422 and Min-SE


def test_session_interval_below_min_se_is_refused_422_and_the_retry_at_min_se_answered(
        tmp_path: Path) -> None:
    min_se, asked = 150, 120  # asked: above the RFC's 90 s floor, below our configured Min-SE
    with warmline(tmp_path, f"[sip]\nsession_expires = 1800\nmin_se = {min_se}\n") as served:
        scenario = render_scenario("uac_session_too_small.xml", tmp_path, asked=str(asked),
                                   min_se=str(min_se))
        result = asyncio.run(sipp_calls(scenario, served.sip_port, tmp_path, timeout=20))
    assert result.returncode == 0, result.output[-4000:]  # sipp's own checks held
    assert_clean(served)

    trace = read_trace(tmp_path)
    invites = [m for m in trace if m.sent and m.method == "INVITE"]
    assert [(m.cseq[0], m.header("Session-Expires")) for m in invites] == [
        (1, str(asked)), (2, str(min_se))]
    call_id = invites[0].header("Call-ID")
    assert call_id is not None and invites[1].header("Call-ID") == call_id
    assert finals_to(trace, call_id, "INVITE") == {1: 422, 2: 200}
    too_small = next(m for m in trace if m.status == 422)
    assert too_small.header("Min-SE") == str(min_se), too_small.text
    assert too_small.start_line.strip() == "SIP/2.0 422 Session Interval Too Small"
    assert f"\nMin-SE: {min_se}" in too_small.text.replace("\r\n", "\n")  # as RFC 4028 spells it
    answered = next(m for m in trace if m.status == 200 and m.cseq == (2, "INVITE"))
    assert answered.header("Session-Expires") == f"{min_se};refresher=uas", answered.text
    assert "timer" in (answered.header("Supported") or ""), answered.text
    assert finals_to(trace, call_id, "BYE") == {3: 200}
    assert served.log().count("ended by caller") == 1  # one call: the 422'd INVITE made none


# ---------------------------------------------------------------- 2. missed refresh


def test_a_refresher_that_never_refreshes_is_hung_up_within_the_session_interval(
        tmp_path: Path) -> None:
    interval = 90  # RFC 4028's smallest allowed, so the test is as short as it can be
    with warmline(tmp_path, "[sip]\nsession_expires = 90\nmin_se = 90\n") as served:
        scenario = render_scenario("uac_refresh_missed.xml", tmp_path, interval=str(interval),
                                   wait_ms=str((interval + 10) * 1000))
        result = asyncio.run(sipp_calls(scenario, served.sip_port, tmp_path,
                                        timeout=interval + 30))
    assert result.returncode == 0, result.output[-4000:]  # a BYE came, the grant was checked
    assert_clean(served)

    trace = read_trace(tmp_path)
    answered = next(m for m in trace if not m.sent and m.status == 200
                    and m.cseq[1] == "INVITE")
    assert answered.header("Session-Expires") == f"{interval};refresher=uac", answered.text
    assert "timer" in (answered.header("Require") or ""), answered.text
    [bye] = [m for m in trace if not m.sent and m.method == "BYE"]
    assert bye.header("Call-ID") == answered.header("Call-ID")
    assert bye.header("To") is not None and "SIPpTag" in (bye.header("To") or "")
    elapsed = bye.at - answered.at
    # after the refresher's deadline (half the interval), before the session expires ...
    assert interval / 2 < elapsed <= interval, f"BYE {elapsed:.1f} s after the 200"
    # ... at the point §10 recommends: expiry minus min(32 s, interval / 3)
    assert abs(elapsed - (interval - min(32, interval / 3))) < 3, f"BYE after {elapsed:.1f} s"
    assert sum(1 for m in trace if m.sent and m.status == 200) >= 1  # sipp answered the BYE
    assert "ended by us" in served.log()


# ---------------------------------------------------------------- 3. Refer-Sub: false


async def _first_call(api: httpx.AsyncClient, timeout: float = 10.0) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        calls = (await api.get("/calls")).json()
        if calls and calls[0]["answered"]:
            return str(calls[0]["id"])
        await asyncio.sleep(0.05)
    raise AssertionError("the sipp caller's call never showed up answered in /calls")


async def _transfer(api: httpx.AsyncClient, call_id: str, body: dict[str, Any],
                    timeout: float = 5.0) -> str:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:  # 409 until the caller's ACK confirmed the call
        answer = await api.post(f"/calls/{call_id}/transfer", json=body)
        if answer.status_code == 202 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["handoff_id"])


async def _ended_handoff(api: httpx.AsyncClient, handoff_id: str,
                         timeout: float = 10.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        handoff: dict[str, Any] = (await api.get(f"/handoffs/{handoff_id}")).json()
        if handoff["status"] in ("completed", "failed") or \
                asyncio.get_running_loop().time() > deadline:
            return handoff
        await asyncio.sleep(0.05)


def test_a_refer_accepted_with_refer_sub_false_completes_when_the_transferee_hangs_up(
        tmp_path: Path) -> None:
    notify_timeout, pause = 10.0, 0.8  # seconds; the caller hangs up `pause` after its 202
    target = f"sip:human@127.0.0.1:{free_port()}"  # blind: warmline never calls it itself

    async def scenario(served: Served) -> tuple[SippResult, str, dict[str, Any]]:
        rendered = render_scenario("caller_refer_sub_false.xml", tmp_path,
                                   target=re.escape(target), pause_ms=str(int(pause * 1000)))
        sipp = asyncio.create_task(sipp_calls(rendered, served.sip_port, tmp_path, timeout=30))
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served.http_port}",
                                         timeout=5) as api:
                call_id = await _first_call(api)
                handoff_id = await _transfer(api, call_id, {
                    "to": target, "mode": "blind", "timeout": notify_timeout})
                result = await sipp
                return result, handoff_id, await _ended_handoff(api, handoff_id)
        finally:
            if not sipp.done():
                await sipp  # bounded by sipp's own -timeout

    with warmline(tmp_path, "[sip]\nsession_expires = 1800\n", http=True) as served:
        result, handoff_id, handoff = asyncio.run(scenario(served))
    assert result.returncode == 0, result.output[-4000:]
    assert_clean(served)

    trace = read_trace(tmp_path)
    [refer] = [m for m in trace if not m.sent and m.method == "REFER"]
    assert target in (refer.header("Refer-To") or ""), refer.text
    assert handoff_id in (refer.header("Refer-To") or "")
    assert refer.header("X-Warmline-Handoff") == handoff_id
    # warmline does not ask for suppression itself (no Refer-Sub: false, no Require), ...
    assert refer.header("Refer-Sub") is None and refer.header("Require") is None, refer.text
    # ... but it says it understands Refer-Sub (the norefersub option tag) in its 200
    answered = next(m for m in trace if not m.sent and m.status == 200
                    and m.cseq[1] == "INVITE")
    assert "norefersub" in (answered.header("Supported") or ""), answered.text
    accepted = next(m for m in trace if m.sent and m.status == 202)
    assert accepted.header("Refer-Sub") == "false"
    [bye] = [m for m in trace if m.sent and m.method == "BYE"]
    # after the 202, warmline sent nothing but the 200 to the caller's BYE: no BYE of its
    # own, no request at all (sipp would also have failed on one during its pause)
    after = [(m.status, m.method, m.cseq[1]) for m in trace
             if not m.sent and m.at >= accepted.at]
    assert after == [(200, None, "BYE")], after

    assert handoff["status"] == "completed", handoff
    assert handoff["reason"] == UNSUBSCRIBED, handoff
    kinds = [event["kind"] for event in handoff["events"]]
    assert kinds[:3] == ["requested", "attempt", "accepted"], kinds
    assert "attempt_succeeded" in kinds and kinds[-1] == "completed", kinds
    assert "attempt_failed" not in kinds and "ringing" not in kinds, kinds
    at = {event["kind"]: float(event["at"]) for event in handoff["events"]}
    # completed by the caller's BYE, at once: not at a NOTIFY timeout (10 s), nor after the
    # 4 s grace a subscribed transferee's final NOTIFY gets once it hung up
    assert at["accepted"] < bye.at <= at["completed"] + 0.05, (at, bye.at)
    assert at["completed"] - bye.at < 1.0, (at, bye.at)
    assert at["completed"] - at["accepted"] < notify_timeout / 2, at


# ---------------------------------------------------------------- 4. Replaces


REPLACES_CASES = {
    # a dialog warmline never had: random Call-ID and tags
    "unknown-dialog": (lambda: f"{uuid.uuid4().hex}@127.0.0.1;to-tag={uuid.uuid4().hex[:8]}"
                               f";from-tag={uuid.uuid4().hex[:8]}", 481),
    # warmline's real dialog (Call-ID and its own tag) but another caller's from-tag
    "wrong-from-tag": (lambda: "[call_id];to-tag=[$ai_totag];from-tag=not-the-callers-tag", 481),
    # no from-tag at all: the header does not parse (RFC 3891 §6.1 needs all three)
    "malformed": (lambda: "[call_id];to-tag=[$ai_totag]", 400),
}


@pytest.mark.parametrize("case", ["unknown-dialog", "wrong-from-tag", "malformed"])
def test_an_invite_replacing_no_dialog_of_ours_is_refused(case: str, tmp_path: Path) -> None:
    make_replaces, final = REPLACES_CASES[case]
    with warmline(tmp_path, "[sip]\nsession_expires = 1800\n") as served:
        scenario = render_scenario("uac_unknown_replaces.xml", tmp_path,
                                   replaces=make_replaces(), final=str(final))
        result = asyncio.run(sipp_calls(scenario, served.sip_port, tmp_path, timeout=20))
    trace = read_trace(tmp_path)
    invites = [m for m in trace if m.sent and m.method == "INVITE"]
    assert len(invites) == 2, [m.start_line for m in trace]
    first_call, replacing = (m.header("Call-ID") or "" for m in invites)
    replaces = invites[1].header("Replaces") or ""
    if case == "wrong-from-tag":  # it did name warmline's real dialog, bar the from-tag
        answered = next(m for m in trace if not m.sent and m.status == 200)
        warmline_tag = (answered.header("To") or "").rpartition(";tag=")[2]
        assert replaces.startswith(f"{first_call};to-tag={warmline_tag};"), replaces
    assert finals_to(trace, replacing, "INVITE") == {1: final}, [m.start_line for m in trace]
    assert result.returncode == 0, result.output[-4000:]
    assert finals_to(trace, first_call, "INVITE") == {1: 200}
    assert finals_to(trace, first_call, "BYE") == {2: 200}  # the real call was left alone
    assert_clean(served)
    assert "stopped: 1 call(s) answered" in served.log()  # the refused INVITE made no call
