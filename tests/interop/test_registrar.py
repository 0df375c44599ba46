"""warmline registered at a real PBX: Kamailio as registrar with digest auth (issue 11).

"Kamailio as a registrar with digest auth: warmline registers, refreshes, takes a
call on the registered contact, and places an authenticated INVITE to a human
behind it; a wrong password fails with a clear outcome and no retry storm."

The layout is production's: `warmline serve --config` with a `[trunks.pbx]`
whose uri names a domain, ``pbx.test``, that warmline finds through DNS (a test
server answering NAPTR, SRV and A for it, named in `[dns]`), the password in the
serve process's environment (``password_env``). Kamailio (tests/interop/kamailio.py,
`kamailio_registrar`) challenges REGISTER with 401 and the INVITEs to the human
with 407, caps bindings at 6 s so warmline refreshes within seconds, sends calls
for ``warmline@pbx.test`` to the registered contact and calls for ``human@pbx.test``
to a PJSIP softphone in its own process.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.dns_server import DnsServer
from tests.interop.kamailio import Kamailio, PbxAccount, Trace, kamailio_registrar
from tests.interop.peers import (
    ServeProcess,
    free_port,
    relay_block,
    render_scenario,
    run_sipp,
    start_serve,
    stop_serve,
    wait_for_log,
)
from tests.interop.pjsip_phone import pjsip_phone

pytestmark = pytest.mark.interop

DOMAIN = "pbx.test"
USER = "warmline"
PASSWORD_ENV = "WARMLINE_TEST_PBX_PASSWORD"
MAX_EXPIRES = 6  # Kamailio's cap: warmline asks 60 s, gets 6, refreshes after 3


def new_password() -> str:
    return "pw-" + secrets.token_hex(8)  # unique: grep-able in every log and argv


@contextlib.contextmanager
def pbx(tmp_path: Path, account: PbxAccount) -> Iterator[tuple[Kamailio, DnsServer]]:
    """Kamailio as registrar, and DNS saying pbx.test is it (NAPTR -> SRV -> A)."""
    with kamailio_registrar(tmp_path / "kamailio", account, max_expires=MAX_EXPIRES) as kam:
        zone = f"""
            {DOMAIN}. 60 IN NAPTR 10 10 "s" "SIP+D2U" "" _sip._udp.{DOMAIN}.
            _sip._udp.{DOMAIN}. 60 IN SRV 10 10 {kam.port} edge.{DOMAIN}.
            edge.{DOMAIN}. 60 IN A 127.0.0.1
        """
        with DnsServer(zone) as dns:
            yield kam, dns


@dataclass
class Warmline:
    server: ServeProcess
    sip_port: int
    http_port: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"


def start_warmline(tmp_path: Path, dns: DnsServer, password: str,
                   monkeypatch: pytest.MonkeyPatch) -> Warmline:
    """`warmline serve --config` with the trunk; the password only in its environment."""
    sip_port, http_port, media = free_port(), free_port(), relay_block()
    config = tmp_path / "warmline.toml"
    config.write_text(f"""
[dns]
servers = ["127.0.0.1:{dns.address[1]}"]
timeout = 3.0  # generous: a loaded CI machine must not turn into a DNS failure

[trunks.pbx]
uri = "sip:{DOMAIN}"
username = "{USER}"
password_env = "{PASSWORD_ENV}"
realm = "{DOMAIN}"
register = true
expires = 60

[transfer]
allow = ["sip:*@{DOMAIN}"]  # the humans behind the PBX; nothing else is dialled
""")
    monkeypatch.setenv(PASSWORD_ENV, password)  # start_serve passes os.environ on
    workdir = tmp_path / "warmline"
    workdir.mkdir()
    server = start_serve(["--config", str(config), "--sip", f"udp:127.0.0.1:{sip_port}",
                          "--http", f"127.0.0.1:{http_port}",
                          "--media-ports", f"{media}-{media + 40}"], workdir)
    wait_for_log(server, "HTTP API")
    return Warmline(server, sip_port, http_port)


def trunk_view(warmline: Warmline) -> dict[str, Any]:
    views = httpx.get(f"{warmline.base_url}/trunks", timeout=2).json()
    [view] = [v for v in views if v["name"] == "pbx"]
    return dict(view)


def wait_for_trunk(warmline: Warmline, state: str, timeout: float = 5.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    seen: list[str] = []
    while time.monotonic() < deadline:
        view = trunk_view(warmline)
        if not seen or seen[-1] != view["state"]:
            seen.append(view["state"])
        if view["state"] == state:
            return view
        time.sleep(0.05)
    raise AssertionError(f"trunk not {state!r} within {timeout}s (states {seen}):\n"
                         f"{warmline.server.log()[-3000:]}")


def wait_until(check: Any, what: str, timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout}s")


def registers(kam: Kamailio, outcome: str | None = None) -> list[Trace]:
    return [t for t in kam.traces("register") if outcome in (None, t.outcome)]


def argv_of_every_process() -> str:
    return subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True,
                          timeout=10, check=True).stdout


def assert_secret_kept(password: str, warmline: Warmline, *texts: str) -> None:
    """Not on any command line (`ps`), not in the serve log, nor in what the API shows."""
    assert password not in argv_of_every_process(), "the password is visible in ps"
    cmdline = Path(f"/proc/{warmline.server.process.pid}/cmdline").read_bytes()
    assert password.encode() not in cmdline
    assert password not in warmline.server.log(), "the password is in the serve log"
    for text in texts:
        assert password not in text


def test_registers_refreshes_takes_a_call_and_bridges_to_a_human_behind_the_pbx(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    password, human_port = new_password(), free_port()
    account = PbxAccount(DOMAIN, USER, password, human=f"sip:human@127.0.0.1:{human_port}")
    with pbx(tmp_path, account) as (kam, _dns), \
            pjsip_phone(tmp_path / "human", human_port, ring_ms=300,
                        hangup_after_ms=1500) as phone:
        warmline = start_warmline(tmp_path, _dns, password, monkeypatch)
        try:
            registered = wait_for_trunk(warmline, "registered")
            # a refresh: a second authenticated REGISTER, the binding renewed
            first = kam.location()
            saved = wait_until(lambda: len(registers(kam, "saved")) >= 2 and
                               registers(kam, "saved"), "a refresh", MAX_EXPIRES + 2)
            renewed = wait_until(lambda: [b for b in kam.location()
                                          if b.cseq > first[0].cseq], "renewed binding", 2)
            assert_secret_kept(password, warmline, str(registered))

            scenario = render_scenario("registrar_caller.xml", tmp_path,
                                       target=account.aor, proxy_port=str(kam.port))
            outcome = asyncio.run(call_and_bridge(warmline, kam, scenario, account, tmp_path))
            phone.wait("done")
            assert_secret_kept(password, warmline, str(outcome.handoff))
        finally:
            code = stop_serve(warmline.server)
        log = warmline.server.log()

    # registered: 401 answered, the binding capped by the registrar, one line in the log
    assert registered["status"] == 200 and registered["expires"] == MAX_EXPIRES, registered
    assert registered["uri"] == f"sip:{DOMAIN}" and registered["failures"] == 0
    [challenged] = registers(kam, "challenged")  # only the very first REGISTER
    assert challenged.fields["auth"] == "-5" and challenged.fields["cseq"] == "1", challenged
    assert challenged.source_port == warmline.sip_port
    for trace in saved:  # refreshes answer the kept challenge (nc+1): one round trip each
        assert trace.fields["user"] == USER and trace.fields["to"] == account.aor, trace
        assert trace.fields["callid"] == challenged.fields["callid"], "Call-ID kept (10.2.4)"
        assert trace.fields["contact"] == f"<sip:{USER}@127.0.0.1:{warmline.sip_port}>"
    assert [int(t.fields["cseq"]) for t in saved][:2] == [2, 3], saved
    [binding] = renewed
    assert binding.aor == USER and binding.contact == f"sip:{USER}@127.0.0.1:{warmline.sip_port}"
    assert 0 < binding.expires <= MAX_EXPIRES and binding.last_modified >= first[0].last_modified
    assert log.count("trunk pbx: registered for 6 s") == 1, log  # not once per refresh

    # the call reached warmline on its registered contact (lookup("location"))
    assert outcome.caller_rc == 0, outcome.caller_output[-4000:]
    [initial] = kam.traces("initial")
    assert initial.method == "INVITE"
    assert initial.fields["ruri"] == f"sip:{USER}@127.0.0.1:{warmline.sip_port}", initial
    assert outcome.call["state"] == "ai" and "caller@" in outcome.call["from"], outcome.call
    assert outcome.call["to"] == account.aor, outcome.call

    # warmline's INVITE to the human: 407 from the PBX, answered with the trunk's account
    human = kam.traces("human")
    assert [(t.outcome, t.method, t.fields["cseq"]) for t in human] == [
        ("challenged", "INVITE", "1"), ("relayed", "INVITE", "2")], human
    challenge, relayed = human
    assert challenge.fields["auth"] == "-5", "the first INVITE carries no credentials"
    assert relayed.fields["user"] == USER and relayed.fields["callid"] == \
        challenge.fields["callid"], "the same call, CSeq + 1, answering the 407 (22.2)"
    assert challenge.source_port == relayed.source_port == warmline.sip_port

    # the human's phone (PJSIP) got it through the PBX, credentials consumed, and answered
    [invite] = phone.invites()
    assert f"Record-Route: <sip:127.0.0.1:{kam.port};lr>" in invite, invite
    assert "Proxy-Authorization" not in invite and "X-Warmline-Handoff: handoff-" in invite
    assert ("CONFIRMED", 200) in phone.states() and phone.states()[-1][0] == "DISCONNECTED"
    assert phone.events("done")[-1]["code"] == 0

    # the handoff completed; the human hung up, warmline hung up the caller
    handoff = outcome.handoff
    assert handoff["status"] == "completed", handoff
    assert handoff["reason"] == "the human hung up", handoff
    kinds = [e["kind"] for e in handoff["events"]]
    assert {"ringing", "answered", "connected"} <= set(kinds), kinds

    # every BYE crossed the PBX (loose_route) and was answered 200
    byes = [t for t in kam.traces("in-dialog") if t.method == "BYE"]
    assert len(byes) == 2, kam.traces()
    assert {b.source_port for b in byes} == {human_port, warmline.sip_port}, byes
    assert all(b.fields["route"] == kam.record_route for b in byes), byes
    bye_replies = [(t.fields["callid"], t.fields["status"]) for t in kam.traces("reply")
                   if t.method == "BYE"]
    assert sorted(bye_replies) == sorted((b.fields["callid"], "200") for b in byes), bye_replies
    assert not kam.traces("no-route") and not kam.traces("not-registered")
    assert code == 0, log

    # RFC 3325 §9.1: PAssertedID-value = name-addr / addr-spec, no header parameters;
    # the caller's From tag (their dialog's) must not leak into the human's INVITE.
    [asserted] = [line for line in invite.splitlines()
                  if line.lower().startswith("p-asserted-identity:")]
    assert "caller@" in asserted
    assert ";tag=" not in asserted, f"the caller's From tag in {asserted!r}"


@dataclass
class CallOutcome:
    call: dict[str, Any]
    handoff: dict[str, Any]
    caller_rc: int
    caller_output: str


async def call_and_bridge(warmline: Warmline, kam: Kamailio, scenario: Path,
                          account: PbxAccount, tmp_path: Path) -> CallOutcome:
    """A sipp caller calls warmline@pbx.test at the PBX; warmline bridges it to the human."""
    caller = asyncio.ensure_future(run_sipp(
        ["-sf", str(scenario), f"127.0.0.1:{kam.port}", "-p", str(free_port()), "-m", "1"],
        tmp_path, timeout=20))
    async with httpx.AsyncClient(base_url=warmline.base_url, timeout=5) as client:
        call: dict[str, Any] | None = None
        for _ in range(200):
            calls = (await client.get("/calls")).json()
            if calls:
                call = dict(calls[0])
                break
            if caller.done():
                break
            await asyncio.sleep(0.05)
        if call is None:
            result = await caller
            raise AssertionError(f"no call reached warmline:\n{result.output[-3000:]}\n"
                                 f"{kam.traces()}")
        response = await client.post(f"/calls/{call['id']}/transfer", json={
            "to": account.human_aor, "mode": "bridge", "timeout": 10})
        assert response.status_code == 202, response.text
        handoff_id = response.json()["handoff_id"]
        result = await caller
        handoff: dict[str, Any] = {}
        for _ in range(100):
            handoff = (await client.get(f"/handoffs/{handoff_id}")).json()
            if handoff["status"] in ("completed", "failed"):
                break
            await asyncio.sleep(0.05)
    return CallOutcome(call, handoff, result.returncode, result.output)


def test_a_wrong_password_fails_clearly_without_a_retry_storm(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    right, wrong = new_password(), new_password()
    with pbx(tmp_path, PbxAccount(DOMAIN, USER, right)) as (kam, dns):
        warmline = start_warmline(tmp_path, dns, wrong, monkeypatch)
        try:
            failed = wait_for_trunk(warmline, "failed")
            time.sleep(4.0)  # what it does next: nothing for a while (back-off)
            later = trunk_view(warmline)
            attempts = registers(kam)
            assert_secret_kept(wrong, warmline, str(failed))
            stop_started = time.monotonic()
        finally:
            code = stop_serve(warmline.server)
        stop_took = time.monotonic() - stop_started
        at_shutdown = registers(kam)[len(attempts):]
        log = warmline.server.log()

    assert failed["status"] == 401 and "authentication failed" in failed["reason"], failed
    assert failed["expires"] is None and failed["failures"] == 1, failed
    assert failed["retry_in"] >= 20, f"the next attempt is backed off: {failed}"
    assert later["state"] == "failed" and later["failures"] == 1, later

    # no retry storm: the first REGISTER and two answered challenges, then silence
    assert [(t.outcome, t.fields["auth"]) for t in attempts] == [
        ("challenged", "-5"), ("challenged", "-2"), ("challenged", "-2")], attempts
    assert all(t.fields["expires"] == "60" for t in attempts)

    # said once, in clear words, with the password nowhere
    failures = [line for line in log.splitlines() if "registration failed" in line]
    assert len(failures) == 1, log
    assert "trunk pbx" in failures[0] and "authentication failed" in failures[0], failures
    assert "check the username and password" in failures[0] and "next try in" in failures[0]
    assert wrong not in log and right not in log
    assert code == 0, log

    # A registration that never bound (credentials refused) is not unregistered at
    # shutdown: that would send the refused password again, three times (carriers'
    # fail2ban-style limits count failed logins), and wait for answers for nothing.
    assert not at_shutdown, (
        "a registration that never bound should not be unregistered at shutdown; "
        f"Kamailio saw {[t.fields for t in at_shutdown]}")
    assert stop_took < 1.5, f"shutdown took {stop_took:.1f} s (UNREGISTER_WAIT)"


def test_shutdown_removes_the_binding(tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    password = new_password()
    with pbx(tmp_path, PbxAccount(DOMAIN, USER, password)) as (kam, dns):
        warmline = start_warmline(tmp_path, dns, password, monkeypatch)
        try:
            wait_for_trunk(warmline, "registered")
            [bound] = kam.location()
            stop_started = time.monotonic()
        finally:
            code = stop_serve(warmline.server)
        stop_took = time.monotonic() - stop_started
        left = kam.location()
        log = warmline.server.log()

    assert bound.contact == f"sip:{USER}@127.0.0.1:{warmline.sip_port}"
    assert code == 0 and stop_took < 2.0, (stop_took, log)
    removal = registers(kam)[-1]
    assert removal.fields["expires"] == "0" and removal.outcome == "saved", removal
    assert removal.fields["callid"] == registers(kam)[0].fields["callid"]
    # the kept challenge answers it: no new 401 at shutdown
    assert [t.outcome for t in registers(kam)].count("challenged") == 1, registers(kam)
    assert left == [], f"binding left at the registrar: {left}"
    assert log.index("trunk pbx: unregistered") < log.index("stopped:"), log


def test_probe_finds_the_pbx_through_dns_and_reaches_it(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """`warmline probe` against the same PBX: NAPTR -> SRV -> A, then its OPTIONS answer."""
    password = new_password()
    with pbx(tmp_path, PbxAccount(DOMAIN, USER, password)) as (kam, dns):
        config = tmp_path / "probe.toml"
        config.write_text(f'[dns]\nservers = ["127.0.0.1:{dns.address[1]}"]\n')
        run = subprocess.run([sys.executable, "-m", "warmline", "probe", f"sip:{DOMAIN}",
                              "--config", str(config), "--json", "--timeout", "2"],
                             capture_output=True, text=True, timeout=30)
    report = json.loads(run.stdout)
    assert run.returncode == 0, run.stdout + run.stderr
    assert report["dns"]["targets"] == [f"udp:127.0.0.1:{kam.port}"]
    assert any(step.startswith(f"SRV _sip._udp.{DOMAIN}") for step in report["dns"]["steps"])
    assert report["options"]["status"] == 200
