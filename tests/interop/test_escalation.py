"""Turns over the API fire a trigger; the context reaches a sipp human before they answer.

`warmline serve --http ... --escalate-to <sipp human>` runs as a real process.
A sipp caller calls in; the test reports the AI's turns over HTTP; the
caller's "get me a human" fires the explicit-request trigger and starts the
handoff. While the human's phone rings, the Call-Info screen-pop URL serves
the full packet; the INVITE the human received carries headers that decode
to that packet; nothing the caller read out (a card number) is in either.
"""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.interop.peers import (
    free_port,
    relay_block,
    render_scenario,
    run_sipp,
    start_serve,
    stop_serve,
    wait_until_serving,
)
from tests.interop.transfer_peers import WAIT_FOR_BYE, caller_hangs_up, expect_headers
from warmline.brain.delivery import decode_uui

pytestmark = pytest.mark.interop

TURNS: list[dict[str, Any]] = [
    {"speaker": "ai", "text": "Hello, this is the billing assistant."},
    {"speaker": "caller", "text": "Hi, I'm Maria, I was charged twice this month.",
     "intent": "billing_dispute", "confidence": 0.92, "slots": {"name": "Maria"}},
    {"speaker": "caller", "text": "My card is 4111 1111 1111 1111.",
     "auth": {"verified": True, "method": "dob+postcode"}},
    {"speaker": "ai", "text": "I could not find the refund.",
     "actions": [{"name": "refund_lookup", "result": "failed"}]},
]
ASK = {"speaker": "caller", "text": "This is useless, get me a human please.",
       "intent": "billing_dispute", "confidence": 0.8}


async def wait_for(client: httpx.AsyncClient, path: str, ready: Any) -> Any:
    for _ in range(200):
        body = (await client.get(path)).json()
        if ready(body):
            return body
        await asyncio.sleep(0.05)
    raise AssertionError(f"{path} never became ready: {body}")


def test_a_trigger_escalates_with_the_context_ahead_of_the_answer(tmp_path: Path) -> None:
    sip_port, http_port, human_port = free_port(), free_port(), free_port()
    media = relay_block()
    (tmp_path / "token").write_text("admin-secret\n")
    server = start_serve(["--sip", f"udp:127.0.0.1:{sip_port}", "--http",
                          f"127.0.0.1:{http_port}", "--media-ports", f"{media}-{media + 40}",
                          "--escalate-to", f"sip:human@127.0.0.1:{human_port}",
                          "--escalate-mode", "bridge", "--api-token-file", "token"], tmp_path)
    checks = expect_headers(uui=("User-to-User", "^ *[0-9a-f]+;encoding=hex;purpose=isdn-uui$"),
                            info=("Call-Info", "/handoffs/handoff-[0-9a-f]+[?]token=[^>]+>"),
                            intent=("X-Warmline-Intent", "^ *billing_dispute$"),
                            verified=("X-Warmline-Verified", "^ *yes$"))
    human_dir = tmp_path / "human"
    human_dir.mkdir()
    human_scenario = render_scenario("human_answers.xml", human_dir, ring_ms="2500",
                                     tail=WAIT_FOR_BYE, checks=checks, **{"from": "sip:caller@"})
    caller_scenario = render_scenario("caller_waits.xml", tmp_path, tail=caller_hangs_up(7000),
                                      headers="")

    async def drive() -> tuple[dict[str, Any], dict[str, Any], list[str]]:
        human = asyncio.ensure_future(run_sipp(
            ["-sf", str(human_scenario), "-i", "127.0.0.1", "-p", str(human_port), "-m", "1",
             "-trace_msg"], human_dir, timeout=25))
        caller = asyncio.ensure_future(run_sipp(
            ["-sf", str(caller_scenario), f"127.0.0.1:{sip_port}", "-p", str(free_port()),
             "-m", "1"], tmp_path, timeout=25))
        base = f"http://127.0.0.1:{http_port}"
        async with httpx.AsyncClient(base_url=base) as anonymous:
            assert (await anonymous.get("/calls")).status_code == 401
        async with httpx.AsyncClient(base_url=base, headers={
                "Authorization": "Bearer admin-secret"}) as client:
            [call] = await wait_for(client, "/calls", bool)
            turns = f"/calls/{call['id']}/turns"
            for turn in TURNS:
                response = await client.post(turns, json=turn)
                assert response.status_code == 201 and response.json()["fired"] == []
            bad = await client.post(turns, json={"speaker": "caller", "confidence": 7})
            assert bad.status_code == 422 and "confidence" in bad.text
            assert (await client.post("/calls/nope/turns", json=ASK)).status_code == 404
            fired = (await client.post(turns, json=ASK)).json()
            assert [f["trigger"] for f in fired["fired"]] == ["explicit_request"]
            handoff_path = f"/handoffs/{fired['handoff_id']}"
            ringing = await wait_for(client, handoff_path,
                                     lambda h: "ringing" in [e["kind"] for e in h["events"]])
            async with httpx.AsyncClient() as desktop:  # holds no API token, only the link
                popped = (await desktop.get(ringing["screen_pop"])).json()
                guessed = await desktop.get(ringing["screen_pop"].split("?")[0] + "?token=x")
                assert guessed.status_code == 401
            seen_before_answer = [e["kind"] for e in popped["events"]]
            for peer in (caller, human):
                result = await peer
                assert result.returncode == 0, result.output[-3000:]
            final = (await client.get(handoff_path)).json()
            rated = await client.post(f"/calls/{call['id']}/csat", json={"score": 4})
            assert rated.status_code == 201
            assert (await client.post(f"/calls/{call['id']}/csat",
                                      json={"score": 9})).status_code == 422
            kpis = await wait_for(client, "/kpis?days=1",
                                  lambda k: k["overall"]["calls"] == 1 and
                                  k["overall"]["csat_escalated"] is not None)
            assert kpis["overall"]["transfers"] == 1 and kpis["overall"]["csat_escalated"] == 4
            assert kpis["overall"]["trigger_to_first_word_p50"] is None or \
                kpis["overall"]["trigger_to_first_word_p50"] > 0
            assert "billing_dispute" in kpis["by_intent"]
            metrics = (await client.get("/metrics")).text
            assert 'warmline_handoffs{status="completed"} 1' in metrics
        return popped, final, seen_before_answer

    try:
        wait_until_serving(server, http_port)
        popped, final, seen_before_answer = asyncio.run(drive())
    finally:
        assert stop_serve(server) == 0, server.log()
    assert "answered" not in seen_before_answer  # the packet was there while it rang
    packet = popped["packet"]
    assert popped["id"] == final["id"]
    assert packet["trigger"]["name"] == "explicit_request"
    assert packet["authentication"]["verified"] is True
    assert packet["summary"] == ("Maria, identity verified, billing dispute, "
                                 "refund lookup already tried")
    assert "4111" not in str(packet) and "[card number]" in str(packet)
    assert final["status"] == "completed" and final["packet"] == packet
    log = next(human_dir.glob("*_messages.log")).read_text()
    uui = re.search(r"User-to-User: ([^\r\n]+)", log)
    assert uui is not None
    digest = decode_uui(uui.group(1))
    assert digest["h"] == final["id"] and digest["i"] == "billing_dispute"
    assert digest["v"] == 1 and digest["t"] == "explicit_request"
    assert digest.get("m") in (None, packet["summary"])
    calibration = subprocess.run(
        [sys.executable, "-m", "warmline", "triggers", "report", "--records",
         str(tmp_path / "warmline-records")], capture_output=True, text=True, timeout=60)
    row = next(line for line in calibration.stdout.splitlines()
               if line.startswith("explicit_request"))
    assert row.split()[1:4] == ["1", "1", "100%"] and "human 1" in row
