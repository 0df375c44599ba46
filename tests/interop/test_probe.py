"""`python -m warmline probe` as a real process against real peers on 127.0.0.1.

Two `warmline serve` processes are the destinations (SIP-only, and with --http, which
answers calls with media and plays hold audio), a tiny DNS server resolves a name to
one of them, and sipp refuses OPTIONS with 403. Every process is bounded in time and
stopped by PID.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.dns_server import DnsServer
from tests.interop.peers import (
    free_port,
    relay_block,
    run_sipp,
    start_serve,
    stop_serve,
    wait_for_log,
    wait_until_serving,
)

pytestmark = pytest.mark.interop

PROBE_SECONDS = 15  # the longest any one probe process may take

OPTIONS_FORBIDDEN = """<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="refuses OPTIONS">
  <recv request="OPTIONS"/>
  <send>
    <![CDATA[
      SIP/2.0 403 Forbidden
      [last_Via:]
      [last_From:]
      [last_To:];tag=[pid]SIPpTag01[call_number]
      [last_Call-ID:]
      [last_CSeq:]
      Server: sipp
      Content-Length: 0
    ]]>
  </send>
</scenario>
"""


def probe(*args: str, cwd: Path) -> tuple[int, dict[str, Any]]:
    """Run `warmline probe ARGS --json`: its exit status and its one JSON object."""
    done = subprocess.run([sys.executable, "-m", "warmline", "probe", *args, "--json"],
                          capture_output=True, text=True, timeout=PROBE_SECONDS, cwd=cwd)
    try:
        return done.returncode, json.loads(done.stdout)
    except json.JSONDecodeError:
        raise AssertionError(f"not one JSON object:\n{done.stdout}\n{done.stderr}") from None


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("probe")


@pytest.fixture(scope="module")
def destinations(workdir: Path) -> Iterator[tuple[int, int]]:
    """(SIP-only serve's port, serve --http's port), started side by side."""
    sip_only, media_port, http, media = free_port(), free_port(), free_port(), relay_block()
    (workdir / "plain").mkdir()
    (workdir / "media").mkdir()
    plain = start_serve(["--sip", f"udp:127.0.0.1:{sip_only}"], workdir / "plain")
    with_media = start_serve(["--sip", f"udp:127.0.0.1:{media_port}", "--http",
                              f"127.0.0.1:{http}", "--media-ports", f"{media}-{media + 40}",
                              "--records", str(workdir / "media" / "records")],
                             workdir / "media")
    try:
        wait_for_log(plain, "warmline listening on")
        wait_until_serving(with_media, http)
        yield sip_only, media_port
    finally:
        stop_serve(plain)
        stop_serve(with_media)


def test_options_to_serve_is_200_with_refer_and_a_round_trip(
        destinations: tuple[int, int], workdir: Path) -> None:
    code, report = probe(f"sip:human@127.0.0.1:{destinations[0]}", cwd=workdir)
    options = report["options"]
    assert code == 0 and report["exit_code"] == 0, report
    assert options["status"] == 200 and "REFER" in options["allow"] and options["rtt_ms"] > 0
    assert options["features"] == {"REFER": True, "Replaces": True, "timer": True,
                                   "100rel": True}
    assert options["auth"] == "not challenged" and report["call"] is None


def test_a_call_to_serve_with_media_gets_audio_back(destinations: tuple[int, int],
                                                    workdir: Path) -> None:
    code, report = probe(f"sip:human@127.0.0.1:{destinations[1]}", "--call", "--timeout", "3",
                         cwd=workdir)
    call = report["call"]
    assert code == 0, report
    assert call["answered"] and call["codec"] in ("PCMU", "PCMA") and call["codecs"]
    assert call["packets_received"] > 0 and call["ended"] == "BYE answered"


def test_a_call_answered_without_media_is_a_failure(destinations: tuple[int, int],
                                                    workdir: Path) -> None:
    code, report = probe(f"sip:human@127.0.0.1:{destinations[0]}", "--call", "--timeout", "2",
                         cwd=workdir)
    assert code == 1 and report["call"]["answered"]
    assert report["call"]["packets_received"] == 0
    assert report["verdict"] == "call answered, but no audio came back"


def test_names_resolve_through_the_configured_dns_and_unknown_ones_exit_3(
        destinations: tuple[int, int], workdir: Path) -> None:
    zone = f"""
        pbx.test.           60 IN NAPTR 10 10 "s" "SIP+D2U" "" _sip._udp.pbx.test.
        _sip._udp.pbx.test. 60 IN SRV   10 0 {destinations[0]} a.pbx.test.
        a.pbx.test.         60 IN A     127.0.0.1
    """
    with DnsServer(zone) as dns:
        config = workdir / "dns.toml"
        config.write_text(f'[dns]\nservers = ["127.0.0.1:{dns.address[1]}"]\ntimeout = 1\n')
        code, found = probe("sip:human@pbx.test", "--config", str(config), cwd=workdir)
        missing_code, missing = probe("sip:human@nowhere.test", "--config", str(config),
                                      "--timeout", "2", cwd=workdir)
    assert code == 0, found
    assert found["dns"]["targets"] == [f"udp:127.0.0.1:{destinations[0]}"]
    assert found["dns"]["steps"][0].startswith("NAPTR pbx.test: SIP+D2U")
    assert missing_code == 3 and missing["options"] is None
    assert missing["dns"]["reason"] == "no such name"
    assert missing["verdict"] == "DNS: nowhere.test: no such name"


def test_a_refusal_and_an_empty_port_exit_1(workdir: Path) -> None:
    sipp_port, empty_port = free_port(), free_port()
    scenario = workdir / "options_forbidden.xml"
    scenario.write_text(OPTIONS_FORBIDDEN)

    async def drive() -> tuple[tuple[int, dict[str, Any]], int]:
        sipp = asyncio.ensure_future(run_sipp(
            ["-sf", str(scenario), "-i", "127.0.0.1", "-p", str(sipp_port), "-m", "1"],
            workdir, timeout=10))
        await _until_listening(sipp_port)
        refused = await asyncio.to_thread(probe, f"sip:human@127.0.0.1:{sipp_port}",
                                          cwd=workdir)
        return refused, (await sipp).returncode

    (code, refused), sipp_status = asyncio.run(asyncio.wait_for(drive(), 25))
    assert code == 1 and refused["options"]["status"] == 403, refused
    assert refused["options"]["server"] == "sipp" and sipp_status == 0
    assert refused["verdict"] == "OPTIONS: 403 Forbidden"
    code, nothing = probe(f"sip:human@127.0.0.1:{empty_port}", "--timeout", "1", cwd=workdir)
    assert code == 1 and nothing["options"]["status"] in (408, 503), nothing


async def _until_listening(port: int, seconds: float = 5.0) -> None:
    """Wait until something holds UDP ``port`` (read from /proc, never by binding it)."""
    local = f":{port:04X}"
    for _ in range(int(seconds / 0.05)):
        table = Path("/proc/net/udp").read_text().splitlines()[1:]
        if any(line.split()[1].endswith(local) for line in table):
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing listens on udp {port} after {seconds} s")
