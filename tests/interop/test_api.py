"""The control API of a real `warmline serve --http` process, driven while sipp calls in."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.interop.peers import (
    free_port,
    relay_block,
    render_scenario,
    run_sipp,
    start_serve,
    stop_serve,
    wait_for_log,
    wait_until_serving,
)
from tests.interop.test_sipp import SUCCESS_TAIL

pytestmark = pytest.mark.interop


async def first_call(client: httpx.AsyncClient) -> dict[str, object]:
    for _ in range(200):
        calls = (await client.get("/calls")).json()
        if calls:
            return dict(calls[0])
        await asyncio.sleep(0.05)
    raise AssertionError("no call listed within 10 s")


def test_transfer_over_http_with_bad_requests_refused(tmp_path: Path) -> None:
    sip_port, http_port, media = free_port(), free_port(), relay_block()
    config = tmp_path / "warmline.toml"  # a name that does not resolve, allowed to be asked
    config.write_text('[transfer]\nallow = ["sip:*@no-such-host.invalid"]\n')
    server = start_serve(["--config", str(config), "--sip", f"udp:127.0.0.1:{sip_port}",
                          "--http", f"127.0.0.1:{http_port}",
                          "--media-ports", f"{media}-{media + 40}"], tmp_path)
    scenario = render_scenario("refer_notify_bye.xml", tmp_path, final="200 OK",
                               tail=SUCCESS_TAIL)

    async def drive() -> dict[str, object]:
        caller = asyncio.ensure_future(run_sipp(
            ["-sf", str(scenario), f"127.0.0.1:{sip_port}", "-p", str(free_port()), "-m", "1"],
            tmp_path, timeout=20))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as client:
            call = await first_call(client)
            assert {"id", "from", "to", "state"} <= call.keys()
            assert call["state"] == "ai" and "caller@" in str(call["from"])
            transfer = f"/calls/{call['id']}/transfer"
            human = "sip:human@127.0.0.1:5999"
            refusals = {
                "/calls/call-nope/transfer": ({"to": human}, 404, "no call"),
                transfer: ({"to": "http://example.com"}, 422, "to"),
                f"{transfer}?": ({"to": human, "mode": "psychic"}, 422, "mode"),
                f"{transfer}?big": ({"to": human, "context": {"x": "y" * 70000}}, 413, "context"),
                f"{transfer}?slow": ({"to": human, "timeout": 0}, 422, "timeout"),
                f"{transfer}?nowhere": ({"to": "sip:human@no-such-host.invalid"}, 422,
                                        "does not resolve"),
                f"{transfer}?premium": ({"to": "sip:+19005550100@gw.example.com"}, 403,
                                        "not an allowed destination"),
                f"{transfer}?badstep": ({"to": human, "fallback": ["somewhere"]}, 422,
                                        "fallback"),
            }
            for path, (body, status, named) in refusals.items():
                response = await client.post(path.split("?")[0], json=body)
                assert response.status_code == status, (path, response.text)
                assert named in response.text
            body = {"to": human, "mode": "blind", "timeout": 5, "context": {"intent": "billing"}}
            racing = await asyncio.gather(client.post(transfer, json=body),
                                          client.post(transfer, json=body))
            assert sorted(r.status_code for r in racing) == [202, 409], [r.text for r in racing]
            accepted = next(r for r in racing if r.status_code == 202)
            handoff_id = accepted.json()["handoff_id"]
            busy = next(r for r in racing if r.status_code == 409)
            assert handoff_id in busy.text  # the loser is told which handoff won
            result = await caller
            assert result.returncode == 0, result.output[-3000:]
            handoff = (await client.get(f"/handoffs/{handoff_id}")).json()
            assert (await client.get("/handoffs/handoff-nope")).status_code == 404
            schema = (await client.get("/openapi.json")).json()
            assert {"/calls", "/calls/{call_id}/transfer", "/handoffs/{handoff_id}"} <= \
                schema["paths"].keys()
            return dict(handoff)

    try:
        wait_until_serving(server, http_port)
        handoff = asyncio.run(drive())
    finally:
        assert stop_serve(server) == 0, server.log()
    assert handoff["status"] == "completed" and handoff["sip_status"] == 200
    assert handoff["context"] == {"intent": "billing"}
    assert [e["kind"] for e in handoff["events"]][:3] == ["requested", "attempt", "accepted"]


def test_serve_runs_from_a_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sip_port, http_port, media = free_port(), free_port(), relay_block()
    config = tmp_path / "warmline.toml"
    config.write_text(f"""
[sip]
listen = ["udp:127.0.0.1:{sip_port}"]
[http]
listen = "127.0.0.1:{http_port}"
api_token_env = "WARMLINE_TEST_API_TOKEN"
[media]
ports = "{media}-{media + 40}"
codecs = ["PCMA"]
[[departments]]
name = "billing"
destinations = [{{ uri = "sip:billing@127.0.0.1:5999", mode = "warm" }}]
""")
    monkeypatch.setenv("WARMLINE_TEST_API_TOKEN", "from-the-file")  # start_serve passes it on
    server = start_serve(["--config", str(config)], tmp_path)
    try:
        wait_for_log(server, f"listening on udp:127.0.0.1:{sip_port}")

        async def ask() -> tuple[int, int]:
            base = f"http://127.0.0.1:{http_port}"
            async with httpx.AsyncClient(base_url=base) as client:
                locked = (await client.get("/calls")).status_code
                opened = (await client.get("/calls", headers={
                    "Authorization": "Bearer from-the-file"})).status_code
            return locked, opened

        assert asyncio.run(ask()) == (401, 200)
    finally:
        assert stop_serve(server) == 0, server.log()
