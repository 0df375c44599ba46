"""warmline against real sipp on loopback, over UDP and TCP."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.interop.peers import (
    Engine,
    engine,
    free_port,
    render_scenario,
    run_sipp,
    start_serve,
    stop_serve,
    wait_for_log,
)
from warmline.sip.message import Response, parse_message
from warmline.sip.session import (
    CallAnswered,
    CallConfirmed,
    CallEnded,
    IncomingCall,
    ReferNotify,
    SessionEvent,
)

pytestmark = pytest.mark.interop
TRANSPORTS = ["udp", "tcp"]
SIPP_TRANSPORT = {"udp": "u1", "tcp": "t1"}


def udp_exchange(port: int, data: bytes, timeout: float = 2.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(data, ("127.0.0.1", port))
        try:
            return sock.recv(65535)
        except TimeoutError:
            return None


BAD_FROM = (
    b"OPTIONS sip:ai@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKbad1;rport\r\n"
    b"From: Bell, Alexander <sip:a@b>;tag=1\r\nTo: <sip:ai@127.0.0.1>\r\nCall-ID: bad1\r\n"
    b"CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
)


def test_serve_answers_sipp_over_udp_and_tcp_and_survives_bad_input(tmp_path: Path) -> None:
    port = free_port()
    server = start_serve(["--sip", f"udp:127.0.0.1:{port}", "--sip", f"tcp:127.0.0.1:{port}"],
                         tmp_path)
    try:
        wait_for_log(server, f"listening on tcp:127.0.0.1:{port}")
        assert udp_exchange(port, b"\x00\xffgarbage\r\n\r\n", timeout=0.5) is None
        reply = udp_exchange(port, BAD_FROM)
        assert reply is not None
        response = parse_message(reply)
        assert isinstance(response, Response) and response.status == 400
        assert "display name" in response.reason
        unknown = udp_exchange(port, BAD_FROM.replace(b"OPTIONS", b"FOO").replace(
            b"Bell, Alexander <sip:a@b>", b"<sip:a@b>"))
        assert unknown is not None and unknown.startswith(b"SIP/2.0 501")

        for transport in TRANSPORTS:
            result = asyncio.run(run_sipp(
                ["-sn", "uac", f"127.0.0.1:{port}", "-t", SIPP_TRANSPORT[transport],
                 "-p", str(free_port()), "-m", "20", "-r", "40"], tmp_path))
            assert result.returncode == 0, result.output[-3000:]
            assert result.stat("Successful call") == 20
            assert result.stat("Failed call") == 0
    finally:
        code = stop_serve(server)
    log = server.log()
    assert code == 0, log
    assert log.count("ended by caller") == 40
    assert "stopped: 40 call(s) answered" in log


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_warmline_calls_sipp_uas(transport: str, tmp_path: Path) -> None:
    async def scenario() -> None:
        sipp_port = free_port()
        sipp = asyncio.create_task(run_sipp(
            ["-sn", "uas", "-i", "127.0.0.1", "-p", str(sipp_port), "-t",
             SIPP_TRANSPORT[transport], "-m", "1"], tmp_path, timeout=20))
        await asyncio.sleep(0.5)
        async with engine(transport) as running:
            uri = f"sip:service@127.0.0.1:{sipp_port};transport={transport.upper()}"
            session = running.shell.run(lambda now: running.ua.invite(
                uri, now, sdp=b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
                b"t=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"))
            await wait_until(running, lambda e: isinstance(e, CallAnswered))
            running.shell.run(lambda now: running.ua.bye(session, now))
            await wait_until(running, lambda e: isinstance(e, CallEnded))
            result = await sipp
        assert result.returncode == 0, result.output[-3000:]
        assert result.stat("Successful call") == 1

    asyncio.run(scenario())


async def wait_until(running: Engine, predicate: Callable[[SessionEvent], bool],
                     timeout: float = 10.0) -> SessionEvent:
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        for _, event in running.events:
            if predicate(event):
                return event
        await asyncio.sleep(0.02)
    raise AssertionError(f"event not seen; got {[type(e).__name__ for _, e in running.events]}")


SUCCESS_TAIL = """  <recv request="BYE"/>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>"""

FAILURE_TAIL = """  <pause milliseconds="600"/>
  <send retrans="500">
    <![CDATA[
      BYE [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: "Caller" <sip:caller@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:ai@[remote_ip]:[remote_port]>[$ai_tag]
      Call-ID: [call_id]
      CSeq: 4 BYE
      Max-Forwards: 70
      Content-Length: 0
    ]]>
  </send>
  <recv response="200"/>"""


def blind_transfer_app(running: Engine, event: SessionEvent) -> None:
    """The AI side: REFER once the call is up; hang up only on a 2xx outcome."""
    ua, shell = running.ua, running.shell
    if isinstance(event, IncomingCall):
        shell.run(lambda now: ua.answer(event.session, SDP, now))
    elif isinstance(event, CallConfirmed):
        target = "<sip:human@127.0.0.1:5999?X-Warmline-Handoff=handoff-0>"
        shell.run(lambda now: ua.refer(event.session, target, now,
                                       referred_by="<sip:ai@127.0.0.1>"))
    elif isinstance(event, ReferNotify) and event.final and 200 <= event.status < 300:
        shell.run(lambda now: ua.bye(event.refer.session, now))


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize(("final", "success"), [("200 OK", True), ("486 Busy Here", False)])
def test_refer_waits_for_final_notify(transport: str, final: str, success: bool,
                                      tmp_path: Path) -> None:
    async def scenario() -> None:
        scenario_file = render_scenario("refer_notify_bye.xml", tmp_path, final=final,
                                        tail=SUCCESS_TAIL if success else FAILURE_TAIL)
        async with engine(transport, blind_transfer_app) as running:
            result = await run_sipp(
                ["-sf", str(scenario_file), f"127.0.0.1:{running.spec.port}", "-t",
                 SIPP_TRANSPORT[transport], "-p", str(free_port()), "-m", "1"],
                tmp_path, timeout=20)
            kinds = [(type(e).__name__, getattr(e, "status", None)) for _, e in running.events]
        assert result.returncode == 0, result.output[-4000:]
        assert ("ReferResponse", 202) in kinds, kinds
        notifies = [(s, e.final) for _, e in running.events if isinstance(e, ReferNotify)
                    for s in [e.status]]
        assert notifies == [(100, False), (int(final.split()[0]), True)]
        ended = [e for _, e in running.events if isinstance(e, CallEnded)]
        assert len(ended) == 1 and ended[0].by_remote is (not success)

    asyncio.run(scenario())


SDP = (b"v=0\r\no=ai 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       b"m=audio 4002 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
