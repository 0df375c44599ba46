"""SDES-SRTP against PJSIP: a caller and a human whose phones insist on SRTP.

The caller's phone offers RTP/SAVP only; warmline answers with its own key.
With ``[media] srtp = "require"`` warmline offers RTP/SAVP to the human too.
Each phone plays its own tone and records what it hears: after the bridge
the caller's recording carries the human's tone and the human's the caller's,
which only happens if both legs decrypt and re-encrypt correctly.
"""

from __future__ import annotations

import time
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.interop.peers import free_port, relay_block, start_serve, stop_serve, wait_until_serving
from tests.interop.pjsip_phone import pjsip_phone

pytestmark = pytest.mark.interop
CALLER_HZ, HUMAN_HZ = 700, 1300


def tone_strength(path: Path, hz: int) -> float:
    """How far ``hz`` stands above the recording's median spectrum (a ratio)."""
    with wave.open(str(path)) as recording:
        rate = recording.getframerate()
        samples = np.frombuffer(recording.readframes(recording.getnframes()), dtype="<i2")
    samples = samples[-rate:].astype(np.float64)  # the last second: bridged by then
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    freqs = np.fft.rfftfreq(len(samples), 1 / rate)
    band = spectrum[(freqs > hz - 15) & (freqs < hz + 15)].max()
    return float(band / (np.median(spectrum) + 1e-9))


def test_srtp_phones_hear_each_other_through_a_bridged_transfer(tmp_path: Path) -> None:
    sip_port, http_port, media = free_port(), free_port(), relay_block()
    config = tmp_path / "warmline.toml"
    config.write_text('[media]\nsrtp = "require"\ncodecs = ["PCMU"]\n')
    workdir = tmp_path / "warmline"
    workdir.mkdir()
    heard_by_caller, heard_by_human = tmp_path / "caller.wav", tmp_path / "human.wav"
    server = start_serve(["--config", str(config), "--sip", f"udp:127.0.0.1:{sip_port}",
                          "--http", f"127.0.0.1:{http_port}",
                          "--media-ports", f"{media}-{media + 40}"], workdir)
    try:
        wait_until_serving(server, http_port)
        with pjsip_phone(tmp_path / "human", free_port(), ring_ms=100, hangup_after_ms=2500,
                         srtp=True, tone_hz=HUMAN_HZ, record=heard_by_human) as human, \
                pjsip_phone(tmp_path / "caller", free_port(), user="caller", srtp=True,
                            tone_hz=CALLER_HZ, record=heard_by_caller, log_level=4,
                            dial=f"sip:ai@127.0.0.1:{sip_port}") as caller:
            api = httpx.Client(base_url=f"http://127.0.0.1:{http_port}", timeout=5)
            deadline = time.monotonic() + 10
            while not api.get("/calls").json() and time.monotonic() < deadline:
                time.sleep(0.1)
            [call] = api.get("/calls").json()
            answer = api.post(f"/calls/{call['id']}/transfer",
                              json={"to": human.uri, "mode": "bridge", "timeout": 10})
            assert answer.status_code == 202, answer.text
            human.wait("done", timeout=15)
            caller.wait("done", timeout=10)
            [invite] = human.invites()
    finally:
        stop_serve(server)
    assert "m=audio" in invite and "RTP/SAVP" in invite and "a=crypto:1 AES_CM_128_HMAC_SHA1_80" \
        in invite
    trace = caller.text()  # warmline's 200 OK to the caller, as PJSIP logged it
    ok = trace[trace.index("SIP/2.0 200 OK"):]
    assert "RTP/SAVP" in ok.split("--end msg--")[0] and "a=crypto:" in ok.split("--end msg--")[0]
    assert ("CONFIRMED", 200) in human.states() and ("CONFIRMED", 200) in caller.states()
    assert tone_strength(heard_by_caller, HUMAN_HZ) > 50, "the caller did not hear the human"
    assert tone_strength(heard_by_human, CALLER_HZ) > 50, "the human did not hear the caller"
    assert tone_strength(heard_by_human, HUMAN_HZ) < tone_strength(heard_by_human, CALLER_HZ)
