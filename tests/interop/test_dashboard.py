"""The dashboard in a real headless Chromium: live calls, handoffs, KPIs, intent filter."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.interop.peers import (
    free_port,
    relay_block,
    render_scenario,
    run_sipp,
    start_serve,
    stop_serve,
    wait_until_serving,
)
from tests.interop.transfer_peers import WAIT_FOR_BYE, caller_hangs_up

pytestmark = pytest.mark.interop


def browser() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1100,900",
                 "--disable-dev-shm-usage"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def test_the_dashboard_shows_calls_handoffs_and_kpis(tmp_path: Path) -> None:
    sip_port, http_port, human_port = free_port(), free_port(), free_port()
    media = relay_block()
    (tmp_path / "token").write_text("t0k\n")
    server = start_serve(["--sip", f"udp:127.0.0.1:{sip_port}", "--http",
                          f"127.0.0.1:{http_port}", "--media-ports", f"{media}-{media + 40}",
                          "--escalate-to", f"sip:human@127.0.0.1:{human_port}",
                          "--escalate-mode", "bridge", "--api-token-file", "token"], tmp_path)
    human_dir = tmp_path / "human"
    human_dir.mkdir()
    human = render_scenario("human_answers.xml", human_dir, ring_ms="100", tail=WAIT_FOR_BYE,
                            checks="", **{"from": "sip:caller@"})
    caller = render_scenario("caller_waits.xml", tmp_path, tail=caller_hangs_up(9000),
                             headers="")
    base = f"http://127.0.0.1:{http_port}"
    results: list[int] = []

    def peers() -> None:
        async def run() -> None:
            done = await asyncio.gather(
                run_sipp(["-sf", str(human), "-i", "127.0.0.1", "-p", str(human_port),
                          "-m", "1"], human_dir, timeout=30),
                run_sipp(["-sf", str(caller), f"127.0.0.1:{sip_port}", "-p",
                          str(free_port()), "-m", "1"], tmp_path, timeout=30))
            results.extend(result.returncode for result in done)
        asyncio.run(run())

    try:
        wait_until_serving(server, http_port)
        thread = threading.Thread(target=peers)
        thread.start()
        auth = {"Authorization": "Bearer t0k"}
        with httpx.Client(base_url=base, headers=auth) as client:
            for _ in range(100):
                calls = client.get("/calls").json()
                if calls:
                    break
                threading.Event().wait(0.05)
            call_id = calls[0]["id"]
            fired = client.post(f"/calls/{call_id}/turns", json={
                "speaker": "caller", "text": "I want to talk to an agent",
                "intent": "billing_dispute", "confidence": 0.9}).json()
            handoff_id = fired["handoff_id"]
            # the ladder's trace needs the API token: not the call's (a bot holds that)
            call_token = calls[0]["token"]
            assert httpx.get(f"{base}/traces/{call_id}").status_code == 401
            assert httpx.get(f"{base}/traces/{call_id}?token={call_token}").status_code == 401
            assert client.get("/traces/no-such-call").status_code == 404
        driver = browser()
        try:
            driver.get(f"{base}/dashboard?token=t0k")
            # rows are redrawn every 2 s: an element found may be replaced before it is read
            wait = WebDriverWait(driver, 10, ignored_exceptions=(
                StaleElementReferenceException, NoSuchElementException))
            wait.until(lambda d: d.find_elements(By.ID, f"call-{call_id}"))
            wait.until(lambda d: d.find_elements(By.ID, f"handoff-{handoff_id}"))
            wait.until(lambda d: "billing_dispute" in
                       [o.get_attribute("value") for o in
                        Select(d.find_element(By.ID, "intent")).options])
            Select(driver.find_element(By.ID, "intent")).select_by_value("billing_dispute")
            wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#chart rect"))
            wait.until(lambda d: "billing_dispute" in
                       d.find_element(By.ID, f"handoff-{handoff_id}").text)
            wait.until(lambda d: "transfer share" in d.find_element(By.ID, "kpis").text)
            kpis = driver.find_element(By.ID, "kpis").text
            assert "100%" in kpis and "no data" in kpis  # one call, escalated; no FCR report
            values = [t.text for t in driver.find_elements(By.CSS_SELECTOR, "#chart text.value")]
            assert "1/1" in values, values  # the day's bar is labelled transfers/calls
            health = driver.find_element(By.ID, "health").text
            assert "sip: ok" in health and "records: ok" in health, health
            destinations = driver.find_element(By.ID, "destinations").text
            assert f"sip:human@127.0.0.1:{human_port}" in destinations, destinations
            wait.until(lambda d: "100%" in d.find_element(By.ID, "intent-billing_dispute").text)
            bars = [t.text for t in driver.find_elements(By.CSS_SELECTOR,
                                                         "#intent-chart text.value")]
            assert "100% of 1 calls transferred" in bars, bars
            driver.find_element(By.ID, f"handoff-{handoff_id}").click()
            wait.until(lambda d: "INVITE" in d.find_element(By.ID, "ladder").text)
            ladder = driver.find_element(By.ID, "ladder").text
            assert "--INVITE-->  warmline" in ladder, ladder  # the caller's, received
            towards_the_human = f"127.0.0.1:{human_port}  <--INVITE--  warmline"
            assert towards_the_human in ladder, ladder
            shot = tmp_path / "dashboard.png"
            driver.save_screenshot(str(shot))
            assert shot.stat().st_size > 10_000
        finally:
            driver.quit()
        thread.join(40)
        assert results == [0, 0]
    finally:
        assert stop_serve(server) == 0, server.log()
