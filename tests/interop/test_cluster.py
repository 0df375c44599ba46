"""The shipped Kamailio config (deploy/kamailio/warmline.cfg) in front of two warmline nodes.

Issue 15, items 1 and 5: one real kamailio rendered from the file operators run,
two `warmline serve` processes with the HTTP API (the engine, media, records),
sipp callers through the proxy. One run, four phases:

1. calls spread over both nodes by the Call-ID hash, every ACK and BYE
   loose-routed through Kamailio to the node that answered (a BYE reaching the
   other node would get 481 and fail the sipp call);
2. node B is drained with ``POST /admin/drain`` (the API token only) while it
   holds live calls: new calls all go to A (Kamailio fails over on B's 503, or
   its OPTIONS probing already marked B inactive), B's live calls finish, and
   B reports drained;
3. B resumes (``DELETE /admin/drain``) and its next 200 to OPTIONS puts it back;
4. ``kill -9`` of A: new calls go to B (fr_timer, failover, A marked inactive).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.interop.kamailio import Kamailio, shipped_kamailio
from tests.interop.peers import (
    SippResult,
    free_port,
    relay_block,
    render_scenario,
    run_sipp,
    start_serve,
    stop_process,
    stop_serve,
    wait_for_log,
)

pytestmark = pytest.mark.interop
TOKEN = "cluster-test-token"


@dataclass
class Node:
    name: str
    sip: int
    http: int
    process: subprocess.Popen[str]
    log_path: Path

    @property
    def uri(self) -> str:
        return f"sip:127.0.0.1:{self.sip}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def api(self, method: str, path: str,
            token: str | None = TOKEN) -> tuple[int, dict[str, object]]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.http}{path}", method=method)
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(request, timeout=5) as answer:
                return answer.status, json.loads(answer.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")


def start_node(tmp_path: Path, name: str) -> Node:
    workdir = tmp_path / name
    workdir.mkdir()
    sip, http, media = free_port(), free_port(), relay_block(200)
    log_path = workdir / "serve.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "warmline", "serve",  # stopped by PID (kill -9 in phase 4)
         "--sip", f"udp:127.0.0.1:{sip}", "--http", f"127.0.0.1:{http}",
         "--media-ports", f"{media}-{media + 200}", "--records", str(workdir / "records")],
        stdout=log_path.open("w"), stderr=subprocess.STDOUT, text=True, cwd=workdir,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "WARMLINE_API_TOKEN": TOKEN})
    return Node(name, sip, http, process, log_path)


def wait_ready(node: Node, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if node.process.poll() is not None:
            raise AssertionError(f"{node.name} exited:\n{node.log()[-3000:]}")
        try:
            if node.api("GET", "/readyz", token=None)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{node.name} not ready:\n{node.log()[-3000:]}")


def wait_flag(proxy: Kamailio, uri: str, first: str, timeout: float = 6.0) -> None:
    """Until Kamailio's dispatcher shows ``uri`` with flags starting ``first`` (A / I)."""
    deadline = time.monotonic() + timeout
    while proxy.dispatcher_flags().get(uri, "")[:1] != first:
        if time.monotonic() > deadline:
            raise AssertionError(f"{uri} never {first}: {proxy.dispatcher_flags()}")
        time.sleep(0.1)


def calls(tmp_path: Path, proxy: Kamailio, count: int, hold_ms: int, tag: str,
          rate: int = 20) -> asyncio.Task[SippResult]:
    workdir = tmp_path / f"sipp-{tag}"
    workdir.mkdir()
    scenario = render_scenario("proxy_uac.xml", workdir, proxy_port=str(proxy.port),
                               hold_ms=str(hold_ms))
    return asyncio.ensure_future(run_sipp(
        ["-sf", str(scenario), f"127.0.0.1:{proxy.port}", "-p", str(free_port()),
         "-m", str(count), "-r", str(rate), "-l", str(count)], workdir, timeout=25))


def routed(proxy: Kamailio, since: int) -> Counter[str]:
    """Where the initial INVITEs logged after trace ``since`` were dispatched first."""
    return Counter(t.fields["dst"] for t in proxy.traces("initial")[since:])


def succeeded(result: SippResult, count: int) -> None:
    assert result.returncode == 0, result.output[-3000:]
    assert result.stat("Successful call") == count, result.output[-3000:]
    assert result.stat("Failed call") == 0, result.output[-3000:]


def test_kamailio_spreads_drains_fails_over_in_front_of_two_nodes(tmp_path: Path) -> None:
    nodes = [start_node(tmp_path, "a"), start_node(tmp_path, "b")]
    a, b = nodes
    try:
        for node in nodes:
            wait_ready(node)
        with shipped_kamailio(tmp_path / "kamailio", [a.uri, b.uri], fr_timer_ms=800,
                              ping_interval=1, lifetime=80) as proxy:
            asyncio.run(_phases(tmp_path, proxy, a, b))
    finally:
        for node in nodes:
            stop_process(node.process, signal.SIGTERM, timeout=10)


async def _phases(tmp_path: Path, proxy: Kamailio, a: Node, b: Node) -> None:
    # 1. the Call-ID hash spreads calls over both; ACK and BYE reach the answering node
    succeeded(await calls(tmp_path, proxy, 30, 100, "spread", rate=30), 30)
    spread = routed(proxy, 0)
    assert set(spread) == {a.uri, b.uri} and min(spread.values()) >= 5, spread
    in_dialog = Counter(t.method for t in proxy.traces("in-dialog"))
    assert in_dialog == {"ACK": 30, "BYE": 30}, in_dialog
    assert all(t.fields["route"] == proxy.record_route for t in proxy.traces("in-dialog"))
    assert not proxy.traces("failover") and not proxy.traces("no-route")

    # 2. drain B with live calls on it (12 calls hashed: none on B has odds 1 in 4096);
    # only the API token opens /admin/drain
    long_calls = calls(tmp_path, proxy, 12, 4000, "live", rate=40)
    await asyncio.sleep(0.8)  # all 12 answered, some on B
    seen = len(proxy.traces("initial"))
    live_on_b = routed(proxy, 0)[b.uri] - spread[b.uri]
    assert live_on_b >= 1, "no live call landed on B (hash spread)"
    assert b.api("POST", "/admin/drain", token=None)[0] == 401
    status, state = b.api("POST", "/admin/drain")
    assert status == 202 and state["state"] == "draining", state
    assert b.api("GET", "/readyz", token=None)[0] == 503
    drained_calls = calls(tmp_path, proxy, 20, 100, "drained", rate=40)
    succeeded(await drained_calls, 20)
    failovers = proxy.traces("failover")
    assert all(t.fields["from"] == b.uri and t.fields["status"] == "503" for t in failovers)
    # every new call was answered by A: those hashed to B failed over on its 503, or B
    # was already inactive after an OPTIONS answered 503
    assert len(failovers) + sum(1 for t in proxy.traces("initial")[seen:]
                                if t.fields["dst"] == a.uri) == 20, (failovers, routed(proxy, seen))
    wait_flag(proxy, b.uri, "I")
    succeeded(await long_calls, 12)  # B's live calls finished normally
    await asyncio.sleep(0.5)
    status, state = b.api("GET", "/admin/drain")
    assert state["state"] == "drained" and state["live_dialogs"] == 0, state
    assert int(str(state["refused"])) >= 1, state  # the 503s (INVITEs and OPTIONS)

    # 3. back into service: the next OPTIONS 200 makes B active again
    assert b.api("DELETE", "/admin/drain")[1]["state"] == "accepting"
    wait_flag(proxy, b.uri, "A")

    # 4. kill -9 of A: new calls go to B
    a.process.send_signal(signal.SIGKILL)
    a.process.wait(5)
    seen = len(proxy.traces("initial"))
    succeeded(await calls(tmp_path, proxy, 10, 100, "killed", rate=10), 10)
    after = proxy.traces("failover")[len(failovers):]
    assert all(t.fields["from"] == a.uri for t in after), after
    first = routed(proxy, seen)
    assert first.get(a.uri, 0) == len(after), (first, after)  # each try of A failed over
    assert proxy.dispatcher_flags()[a.uri].startswith("I"), proxy.dispatcher_flags()


def options_status(port: int) -> str:
    """The status line (and Reason header, if any) of a node's answer to OPTIONS."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(2)
        me = sock.getsockname()[1]
        branch = uuid.uuid4().hex
        sock.sendto((f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                     f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bK{branch};rport\r\n"
                     f"From: <sip:probe@127.0.0.1>;tag=p\r\nTo: <sip:127.0.0.1:{port}>\r\n"
                     f"Call-ID: {branch}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n"
                     "Content-Length: 0\r\n\r\n").encode(), ("127.0.0.1", port))
        answer = sock.recv(65535).decode()
    reason = [line for line in answer.split("\r\n") if line.lower().startswith("reason:")]
    return " ".join([answer.split("\r\n", 1)[0], *reason])


def test_sigusr1_drains_an_idle_node_which_exits_when_drained(tmp_path: Path) -> None:
    """The SIP-only answerer too: SIGUSR1, OPTIONS 503 with a Reason, then exit 0."""
    port = free_port()
    server = start_serve(["--sip", f"udp:127.0.0.1:{port}", "--exit-when-drained"], tmp_path)
    try:
        wait_for_log(server, f"listening on udp:127.0.0.1:{port}")
        assert options_status(port) == "SIP/2.0 200 OK"
        server.process.send_signal(signal.SIGUSR1)
        wait_for_log(server, "drained: no live dialog left")
        server.process.wait(5)  # it left on its own
    finally:
        code = stop_serve(server)
    assert code == 0, server.log()
    assert "draining (SIGUSR1)" in server.log()


def test_a_draining_node_answers_options_503_with_a_reason(tmp_path: Path) -> None:
    port = free_port()
    server = start_serve(["--sip", f"udp:127.0.0.1:{port}"], tmp_path)
    try:
        wait_for_log(server, f"listening on udp:127.0.0.1:{port}")
        server.process.send_signal(signal.SIGUSR1)
        wait_for_log(server, "draining (SIGUSR1)")
        assert options_status(port) == ("SIP/2.0 503 Service Unavailable (draining) "
                                        'Reason: SIP;cause=503;text="draining"')
    finally:
        code = stop_serve(server)
    assert code == 0, server.log()


def test_a_flooding_source_is_ignored_by_the_shipped_config_and_exempt_ones_never(
        tmp_path: Path) -> None:
    """Per-source flood protection lives in Kamailio (pike in the shipped config): 100
    requests in a burst from 127.0.0.1 get about WL_FLOOD_DENSITY answers, the rest are
    dropped unanswered; the same burst from an exempt address (a carrier) is all answered,
    and so is one from a node's address though from another port than the one listed."""
    node = "127.0.0.5"  # listed in the dispatcher (nothing answers there: it is only a name)
    with shipped_kamailio(tmp_path / "kamailio", [f"sip:{node}:{free_port()}"],
                          flood_density=20, flood_exempt="127.0.0.2/32") as proxy:
        flooding = options_burst("127.0.0.1", proxy.port, 100)
        carrier = options_burst("127.0.0.2", proxy.port, 100)
        from_node = options_burst(node, proxy.port, 100)
    print(f"answered: flooding source {flooding}/100, exempt source {carrier}/100, "
          f"a node from another port {from_node}/100")
    assert 15 <= flooding <= 40  # the density (20 in 2 s), give or take pike's sampling
    assert carrier == 100 and from_node == 100


def options_burst(source: str, port: int, count: int) -> int:
    """Send ``count`` OPTIONS to the proxy itself from ``source`` at once; 200s received."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        local = sock.getsockname()[1]
        for n in range(count):
            sock.sendto((f"OPTIONS sip:127.0.0.1:{port} SIP/2.0\r\n"
                         f"Via: SIP/2.0/UDP {source}:{local};branch=z9hG4bK{uuid.uuid4().hex}\r\n"
                         f"From: <sip:probe@{source}>;tag=p{n}\r\nTo: <sip:127.0.0.1:{port}>\r\n"
                         f"Call-ID: {uuid.uuid4().hex}\r\nCSeq: 1 OPTIONS\r\n"
                         "Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n").encode(),
                        ("127.0.0.1", port))
        sock.settimeout(0.5)
        answered = 0
        try:
            while answered < count:
                if sock.recv(65535).startswith(b"SIP/2.0 200"):
                    answered += 1
        except TimeoutError:
            pass
        return answered
