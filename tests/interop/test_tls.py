"""`warmline serve` over TLS (sips:), called by an in-process warmline engine."""

from __future__ import annotations

import asyncio
import signal
import ssl
import subprocess
from pathlib import Path

import pytest

from tests.dns_server import DnsServer
from tests.interop.peers import (
    ServeProcess,
    engine,
    free_port,
    relay_block,
    self_signed_certificate,
    start_serve,
    stop_serve,
    wait_for_log,
)
from tests.interop.test_sipp import wait_until
from warmline.calls.switchboard import Switchboard
from warmline.media.relay import EmbeddedRelay, PortRange
from warmline.sip.session import CallAnswered, CallEnded
from warmline.transport.resolver import Resolver

pytestmark = pytest.mark.interop
OFFER = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
         b"m=audio 4000 RTP/AVP 8 0\r\n")


def serve_tls(tmp_path: Path) -> tuple[ServeProcess, int, Path, Path]:
    cert, key = self_signed_certificate(tmp_path)
    port = free_port()
    server = start_serve(["--sip", f"tls:127.0.0.1:{port}", "--tls-cert", str(cert),
                          "--tls-key", str(key)], tmp_path)
    wait_for_log(server, f"listening on tls:127.0.0.1:{port}")
    return server, port, cert, key


def test_call_over_tls_to_serve(tmp_path: Path) -> None:
    server, port, cert, key = serve_tls(tmp_path)
    try:
        client_tls = ssl.create_default_context(cafile=str(cert))
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_tls.load_cert_chain(str(cert), str(key))

        async def call() -> None:
            async with engine("tls", tls_server=server_tls, tls_client=client_tls) as running:
                session = running.shell.run(lambda now: running.ua.invite(
                    f"sips:ai@127.0.0.1:{port}", now, sdp=OFFER))
                answered = await wait_until(running, lambda e: isinstance(e, CallAnswered))
                assert isinstance(answered, CallAnswered)
                assert b"RTP/AVP 8" in answered.response.body  # PCMA, the offer's first choice
                assert answered.response.contact is not None
                assert answered.response.contact.sip_uri.scheme == "sips"
                running.shell.run(lambda now: running.ua.bye(session, now))
                await wait_until(running, lambda e: isinstance(e, CallEnded))

        asyncio.run(call())
    finally:
        code = stop_serve(server, signal.SIGINT)
    assert code == 0
    assert "over tls: ended by caller" in server.log()
    assert "stopped: 1 call(s) answered" in server.log()


def test_untrusted_certificate_fails_the_call_fast(tmp_path: Path) -> None:
    server, port, _, _ = serve_tls(tmp_path)
    try:

        async def call() -> None:
            async with engine("udp", tls_client=ssl.create_default_context()) as running:
                running.shell.run(lambda now: running.ua.invite(
                    f"sips:ai@127.0.0.1:{port}", now, sdp=OFFER))
                failed = await wait_until(running, lambda e: type(e).__name__ == "CallFailed",
                                          timeout=5)
                assert getattr(failed, "status", None) == 503  # transport error (§8.1.3.1)

        asyncio.run(call())
    finally:
        stop_serve(server)


def certificate_for(workdir: Path, name: str) -> tuple[Path, Path]:
    """A throwaway certificate for the DNS name ``name`` (its subjectAltName)."""
    cert, key = workdir / f"{name}.pem", workdir / f"{name}.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
         "-addext", f"subjectAltName=DNS:{name}"],
        check=True, capture_output=True, timeout=60)
    return cert, key


@pytest.mark.parametrize(("certified", "reachable"), [("tls.pbx.test", True),
                                                      ("someone-else.test", False)])
def test_sips_is_tls_to_the_srv_target_with_the_domain_s_certificate(
        tmp_path: Path, certified: str, reachable: bool) -> None:
    """sips:...@tls.pbx.test: _sips._tcp SRV -> an address; the certificate must name the
    domain (RFC 5922), however it resolved."""
    cert, key = certificate_for(tmp_path, certified)
    port = free_port()
    server = start_serve(["--sip", f"tls:127.0.0.1:{port}", "--tls-cert", str(cert),
                          "--tls-key", str(key)], tmp_path)
    wait_for_log(server, f"listening on tls:127.0.0.1:{port}")
    zone = (f"_sips._tcp.tls.pbx.test. 60 IN SRV 10 0 {port} box.pbx.test.\n"
            "box.pbx.test. 60 IN A 127.0.0.1")
    try:
        with DnsServer(zone) as dns:

            async def probe() -> int:
                async with engine("udp", tls_client=ssl.create_default_context(
                        cafile=str(cert))) as running:
                    base = relay_block(2)  # no media: an OPTIONS probe
                    board = Switchboard(running.shell, EmbeddedRelay(
                        "127.0.0.1", PortRange(base, base + 2)), "127.0.0.1", ["PCMU"],
                        _Nobody(), resolver=Resolver([dns.address]))
                    return await board.probe("sips:ai@tls.pbx.test", 3.0)

            status = asyncio.run(probe())
    finally:
        stop_serve(server)
    assert (status == 200) is reachable, status
    if not reachable:
        assert status == 503  # the certificate names someone else: a transport error


class _Nobody:
    """A switchboard observer for a test that places no calls."""

    def call_started(self, call: object) -> None: ...

    def call_ended(self, call: object, reason: str | None) -> None: ...

    def call_forgotten(self, call: object) -> None: ...

    def registration_changed(self, registration: object) -> None: ...
