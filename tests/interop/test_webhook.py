"""The signed webhook reaches the desktop before the phone rings; a slow one does not block."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from tests.interop.peers import free_port
from tests.interop.transfer_peers import WAIT_FOR_BYE, Human, caller_hangs_up, kinds, run_transfer
from warmline.calls.call import Call
from warmline.engine import CallEngine
from warmline.transfer.handoff import Destination, Handoff

pytestmark = pytest.mark.interop
SECRET = "desk-secret"


class Desktop:
    """A minimal HTTP endpoint standing in for the agent desktop or CRM."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.port = free_port()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode()
        headers = {k.lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in head.split("\r\n")[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.received.append((headers, body))
        await asyncio.sleep(self.delay)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        await writer.drain()
        writer.close()


def run_with_desktop(tmp_path: Path, delay: float) -> tuple[Any, Desktop]:
    desktop = Desktop(delay)
    human = Human("human_answers.xml", {"ring_ms": "100", "tail": WAIT_FOR_BYE})

    def configure(engine: CallEngine) -> None:
        engine.escalation.webhook_url = f"http://127.0.0.1:{desktop.port}/handoff"
        engine.escalation.webhook_secret = SECRET
        engine.escalation.webhook_timeout = 0.5

    def make(call: Call) -> Handoff:
        return Handoff(call.id, Destination(human.uri, "bridge", 5))

    async def scenario() -> Any:
        server = await asyncio.start_server(desktop.handle, "127.0.0.1", desktop.port)
        try:
            return await run_transfer(tmp_path, caller_hangs_up(2500), make, [human],
                                      configure=configure)
        finally:
            server.close()

    return asyncio.run(scenario()), desktop


def test_the_packet_is_posted_signed_before_the_phone_rings(tmp_path: Path) -> None:
    outcome, desktop = run_with_desktop(tmp_path, delay=0.0)
    [(headers, body)] = desktop.received
    stamp, _, mac = headers["x-warmline-signature"].partition(",v1=")
    expected = hmac.new(SECRET.encode(), f"{stamp[2:]}.".encode() + body, hashlib.sha256)
    assert mac == expected.hexdigest()
    packet = json.loads(body)
    assert packet["handoff_id"] == outcome.handoff.id and packet["version"] == "1.0"
    events = kinds(outcome.handoff)
    assert events.index("webhook_delivered") < events.index("ringing")


def test_a_slow_desktop_is_recorded_and_the_transfer_goes_on(tmp_path: Path) -> None:
    outcome, desktop = run_with_desktop(tmp_path, delay=3.0)
    assert len(desktop.received) == 1
    failed = next(e for e in outcome.handoff.events if e.kind == "webhook_failed")
    assert failed.detail["seconds"] < 1.0  # bounded by the 0.5 s timeout
    assert "connected" in kinds(outcome.handoff)
