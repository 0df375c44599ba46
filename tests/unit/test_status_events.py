"""Status callbacks: signed the Standard Webhooks way, in order, retried, bounded."""

from __future__ import annotations

import asyncio
import json
import socket
from typing import Any

from fastapi import FastAPI, Request, Response
from standardwebhooks.webhooks import Webhook

from tests.unit.test_pii_nowhere import rig  # noqa: F401  (the fixture)
from warmline.api.http_server import start_http, stop_http
from warmline.brain.status_events import StatusCallbacks

SECRET = "whsec_" + "c2VjcmV0LWZvci10ZXN0cy0xMjM0NTY3ODkw"  # base64 of a test key


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def receiver(answers: list[int]) -> tuple[FastAPI, list[dict[str, Any]]]:
    """A desk that verifies each signature and answers the next status in ``answers``."""
    app, got = FastAPI(), []
    verifier = Webhook(SECRET)

    @app.post("/events")
    async def events(request: Request) -> Response:
        body = await request.body()
        payload = verifier.verify(body, dict(request.headers))  # raises when forged
        got.append({"id": request.headers["webhook-id"], **payload})
        return Response(status_code=answers.pop(0) if answers else 200)

    return app, got


def test_events_arrive_signed_in_order_and_a_5xx_is_retried_with_the_same_id() -> None:
    async def scenario() -> tuple[list[dict[str, Any]], StatusCallbacks]:
        app, got = receiver([503, 200, 400])
        port = free_port()
        server, task = await start_http(app, "127.0.0.1", port)
        events = StatusCallbacks(f"http://127.0.0.1:{port}/events", SECRET, {"call.started",
                                 "handoff.connected", "handoff.failed"}, first_retry=0.05)
        events.publish("call-1", "call.started", {"caller": "sip:a@b"}, None, 1000.0)
        events.publish("call-1", "call.intent", {"intent": "x"}, None, 1001.0)  # not pushed
        events.publish("call-1", "handoff.failed", {"reason": "busy"}, "handoff-1", 1002.0)
        events.publish("call-1", "handoff.connected", {}, "handoff-2", 1003.0)
        for _ in range(100):
            if events.counts.delivered + events.counts.refused == 3:
                break
            await asyncio.sleep(0.05)
        await events.close()
        await stop_http(server, task)
        return got, events

    got, events = asyncio.run(scenario())
    assert [g["type"] for g in got] == ["call.started", "call.started", "handoff.failed",
                                        "handoff.connected"]
    assert got[0]["id"] == got[1]["id"]  # the retry is the same message: receivers dedupe
    assert got[0]["data"] == {"call_id": "call-1", "handoff_id": None, "caller": "sip:a@b"}
    assert got[0]["timestamp"].startswith("1970-01-01T00:16:40")
    counts = events.counts
    assert (counts.delivered, counts.retried, counts.refused) == (2, 1, 1)  # 400: not retried


def test_a_forged_signature_fails_verification() -> None:
    events = StatusCallbacks("http://127.0.0.1:9/x", "another-secret")
    event_body = json.dumps({"type": "call.started"})
    from datetime import UTC, datetime
    signature = events._signer.sign("msg_1", datetime.now(UTC), event_body)
    headers = {"webhook-id": "msg_1", "webhook-signature": signature,
               "webhook-timestamp": str(int(datetime.now(UTC).timestamp()))}
    try:
        Webhook(SECRET).verify(event_body, headers)
    except Exception as error:  # the library's WebhookVerificationError
        assert "signature" in str(error).lower()
    else:
        raise AssertionError("a signature made with another secret verified")


def test_a_receiver_down_for_long_costs_bounded_memory() -> None:
    async def scenario() -> StatusCallbacks:
        events = StatusCallbacks(f"http://127.0.0.1:{free_port()}/events", SECRET,
                                 {"call.started"}, max_queued=100, attempts=2,
                                 first_retry=0.01, timeout=0.2)
        for n in range(1000):
            events.publish(f"call-{n}", "call.started", {}, None, float(n))
        assert events.pending <= 100
        await events.close(grace=0.1)
        return events

    events = asyncio.run(scenario())
    assert events.counts.dropped >= 900


def test_the_engine_pushes_what_it_records_redacted(rig: Any) -> None:  # noqa: F811
    pushed: list[tuple[str, str, dict[str, Any]]] = []

    class Collector:
        def publish(self, call_id: str, kind: str, data: dict[str, Any],
                    handoff_id: str | None, at: float) -> None:
            pushed.append((call_id, kind, data))

    rig.engine.status_events = Collector()
    rig.engine.record("call-pii-1", "call.ended", {"reason": "card 4111 1111 1111 1111"})
    assert pushed == [("call-pii-1", "call.ended", {"reason": "card [card number]"})]


def test_a_bug_costs_one_event_not_the_rest() -> None:
    async def scenario() -> tuple[list[str], StatusCallbacks]:
        sent: list[str] = []
        events = StatusCallbacks("http://127.0.0.1:9/x", SECRET, {"call.started"})

        async def post(client: Any, event: Any, body: str) -> str:
            if event.call_id == "call-1":
                raise RuntimeError("a bug in the signer")
            sent.append(event.call_id)
            return "delivered"

        events._post = post  # type: ignore[method-assign]
        for n in (1, 2, 3):
            events.publish(f"call-{n}", "call.started", {}, None, float(n))
        for _ in range(50):
            if len(sent) == 2:
                break
            await asyncio.sleep(0.02)
        await events.close()
        return sent, events

    sent, events = asyncio.run(scenario())
    assert sent == ["call-2", "call-3"] and events.counts.given_up == 1


def test_every_event_is_delivered_dropped_or_pending_none_lost_quietly() -> None:
    async def scenario() -> StatusCallbacks:
        events = StatusCallbacks("http://127.0.0.1:9/x", SECRET, {"call.started"},
                                 max_queued=3)
        release = asyncio.Event()

        async def post(client: Any, event: Any, body: str) -> str:
            await release.wait()  # the receiver is slow while the queue overflows
            return "delivered"

        events._post = post  # type: ignore[method-assign]
        for n in range(10):
            events.publish(f"call-{n}", "call.started", {}, None, float(n))
            await asyncio.sleep(0)
        release.set()
        for _ in range(50):
            if not events.pending:
                break
            await asyncio.sleep(0.02)
        await events.close()
        return events

    events = asyncio.run(scenario())
    counts = events.counts
    assert counts.delivered + counts.dropped == 10 and counts.dropped > 0
