"""Memory stays flat: an ended call leaves memory after [limits] keep_ended_calls, and the API
reads it from the records from then on (GET /calls/{id}, a late CSAT still counted)."""

from __future__ import annotations

import asyncio
import time
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
    wait_until_serving,
)
from tests.interop.transfer_peers import caller_hangs_up

pytestmark = pytest.mark.interop
KEEP = 5.0  # the smallest [limits] keep_ended_calls allows


def test_an_ended_call_moves_from_memory_to_the_records(tmp_path: Path) -> None:
    sip_port, http_port, media = free_port(), free_port(), relay_block()
    (tmp_path / "warmline.toml").write_text(f"[limits]\nkeep_ended_calls = {KEEP}\n")
    server = start_serve(["--sip", f"udp:127.0.0.1:{sip_port}", "--http",
                          f"127.0.0.1:{http_port}", "--media-ports", f"{media}-{media + 10}",
                          "--config", "warmline.toml"], tmp_path)
    caller = render_scenario("caller_waits.xml", tmp_path, tail=caller_hangs_up(300),
                             headers="")

    def one_call() -> None:
        result = asyncio.run(run_sipp(["-sf", str(caller), f"127.0.0.1:{sip_port}", "-p",
                                       str(free_port()), "-m", "1"], tmp_path, timeout=30))
        assert result.returncode == 0, result.stderr

    try:
        wait_until_serving(server, http_port)
        with httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=10) as client:
            one_call()
            [first] = client.get("/calls").json()  # ended, still listed for KEEP seconds
            assert first["state"] == "ended"
            assert client.get(f"/calls/{first['id']}").json()["source"] == "live"
            time.sleep(KEEP + 1)
            one_call()  # a new call sweeps the ones ended over KEEP seconds ago
            listed = [call["id"] for call in client.get("/calls").json()]
            assert first["id"] not in listed and len(listed) == 1, listed
            history = client.get(f"/calls/{first['id']}").json()
            assert history["source"] == "records" and history["state"] == "ended", history
            kinds = [event["kind"] for event in history["events"]]
            assert kinds[0] == "call.started" and "call.ended" in kinds, kinds
            late = client.post(f"/calls/{first['id']}/csat", json={"score": 4})
            assert late.status_code == 201, late.text  # a survey an hour on still counts
            assert client.get("/calls/call-0000000000000000").status_code == 404
            assert client.post("/calls/call-0000000000000000/csat",
                               json={"score": 4}).status_code == 404
            for _ in range(50):  # the score reaches the KPIs once the writer has shipped it
                kpis = client.get("/kpis").json()["overall"]
                if kpis["csat_ai_only"] is not None:
                    break
                time.sleep(0.1)
            assert kpis["csat_ai_only"] == 4.0 and kpis["calls"] == 2, kpis
    finally:
        assert stop_serve(server) == 0, server.log()
