"""Per-call status URLs: only hosts the operator listed, signed as [events] are."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.unit.test_pii_nowhere import Rig, rig  # noqa: F401  (the fixture)
from tests.unit.test_status_events import SECRET, free_port, receiver
from warmline.api import build_app
from warmline.api.http_server import start_http, stop_http
from warmline.brain.status_events import CallStatusUrls


@pytest.mark.parametrize(("url", "refused_for"), [
    ("https://crm.example.com/hook", None),
    ("https://a.hooks.example/x", None),
    ("http://127.0.0.1:8080/events", None),
    ("http://crm.example.com/hook", "plain http"),
    ("https://crm.example.com.evil.net/hook", "not in [events] call_url_hosts"),
    ("https://169.254.169.254/latest/meta-data", "not in [events] call_url_hosts"),
    ("https://user:pw@crm.example.com/hook", "user or password"),
    ("ftp://crm.example.com/hook", "https://"),
    ("https://crm.example.com:99999/", "not a URL"),
    ("https:///nohost", "https://"),
])
def test_only_listed_hosts_over_https_or_loopback_http(url: str, refused_for: str | None
                                                       ) -> None:
    urls = CallStatusUrls(SECRET, ["crm.example.com", "*.hooks.example", "127.0.0.1"])
    problem = urls.problem(url)
    if refused_for is None:
        assert problem is None
    else:
        assert problem is not None and refused_for in problem


def test_no_list_means_no_per_call_url_at_all() -> None:
    problem = CallStatusUrls(SECRET, []).problem("https://crm.example.com/hook")
    assert problem is not None and "call_url_hosts" in problem


def test_a_calls_events_reach_its_url_signed_and_no_other_calls() -> None:
    async def scenario() -> list[dict[str, Any]]:
        app, got = receiver([])
        port = free_port()
        server, task = await start_http(app, "127.0.0.1", port)
        urls = CallStatusUrls(SECRET, ["127.0.0.1"])
        urls.set("call-1", f"http://127.0.0.1:{port}/events")
        urls.publish("call-2", "call.answered", {}, None, 1000.0)  # no URL for it
        urls.publish("call-1", "call.answered", {"sip_status": 200}, None, 1001.0)
        urls.publish("call-1", "call.intent", {}, None, 1002.0)  # not a pushed kind
        urls.publish("call-1", "call.ended", {"reason": "bye"}, None, 1003.0)
        for _ in range(100):
            if len(got) == 2:
                break
            await asyncio.sleep(0.05)
        await urls.close()
        await stop_http(server, task)
        return got

    got = asyncio.run(scenario())  # the receiver verified each signature
    assert [(g["type"], g["data"]["call_id"]) for g in got] == [
        ("call.answered", "call-1"), ("call.ended", "call-1")]


def test_post_call_events_checks_the_url_first(rig: Rig) -> None:  # noqa: F811
    api = TestClient(build_app(rig.engine))
    refused = api.post("/calls/call-pii-1/events", json={"url": "https://crm.example.com/x"})
    assert refused.status_code == 422 and "no [events] secret" in refused.text
    rig.engine.call_events = CallStatusUrls(SECRET, ["crm.example.com"])
    for url, named in (("http://crm.example.com/x", "plain http"),
                       ("https://10.0.0.1/x", "not in [events] call_url_hosts")):
        answer = api.post("/calls/call-pii-1/events", json={"url": url})
        assert answer.status_code == 422 and named in answer.text, answer.text
    assert api.post("/calls/call-nope/events",
                    json={"url": "https://crm.example.com/x"}).status_code == 404
    assert rig.engine.call_events.url_of("call-pii-1") is None
    taken = api.post("/calls/call-pii-1/events", json={"url": "https://crm.example.com/x"})
    assert taken.status_code == 200, taken.text
    assert rig.engine.call_events.url_of("call-pii-1") == "https://crm.example.com/x"
