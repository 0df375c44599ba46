"""`warmline serve` over TLS (sips:), called by an in-process warmline engine."""

from __future__ import annotations

import asyncio
import signal
import ssl
from pathlib import Path

import pytest

from tests.interop.peers import (
    ServeProcess,
    engine,
    free_port,
    self_signed_certificate,
    start_serve,
    stop_serve,
    wait_for_log,
)
from tests.interop.test_sipp import wait_until
from warmline.sip.session import CallAnswered, CallEnded

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
