"""`warmline probe` against far ends in this process, on 127.0.0.1 with real sockets and RTP:
a digest challenge passed and failed, silence (408), a closed port, and the test call
answered (the tone arrives, audio comes back), refused, or left ringing (CANCEL)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from warmline.calls.trunks import Trunk, Trunks
from warmline.media.negotiation import Negotiation
from warmline.media.player import Player, Samples, ringback
from warmline.media.relay import EmbeddedRelay, PortRange, RelayLeg
from warmline.probe import (
    EXIT_FAILED,
    EXIT_OK,
    AuthOutcome,
    ProbeReport,
    ProbeSettings,
    render_json,
    render_text,
    run_probe,
)
from warmline.sip.auth import Credentials
from warmline.sip.session import IncomingCall, SessionEvent
from warmline.sip.uri import SipUri
from warmline.sip.useragent import UserAgent, UserAgentConfig
from warmline.transport.listen import ListenSpec
from warmline.transport.shell import SipShell

LOOPBACK = ListenSpec("udp", "127.0.0.1", 0)
CHALLENGING = UserAgentConfig(trusted_networks=["10.0.0.0/8"], auth_users={"alice": "wonderland"})


@dataclass
class FarEnd:
    """A phone that answers (playing ringback back), refuses, or only rings."""

    shell: SipShell
    relay: EmbeddedRelay
    behaviour: str
    heard: list[Samples] = field(default_factory=list)
    legs: list[RelayLeg] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.shell.ua.local_address("udp")[1]

    def on_event(self, event: SessionEvent) -> None:
        if not isinstance(event, IncomingCall):
            return
        session, ua = event.session, self.shell.ua
        if self.behaviour == "refuse":
            self.shell.run(lambda now: ua.reject(session, 486, now))
        elif self.behaviour == "ring":
            self.shell.run(lambda now: ua.ring(session, now))
        else:
            asyncio.get_running_loop().create_task(self._answer(event))

    async def _answer(self, event: IncomingCall) -> None:
        leg = await self.relay.open_leg("far end")
        self.legs.append(leg)
        answer = Negotiation(leg, "127.0.0.1", ["PCMA"]).answer(  # our second choice
            event.session.remote_sdp or b"")
        leg.record(self.heard.append)
        leg.play(Player(ringback(), loop=True))
        self.shell.run(lambda now: self.shell.ua.answer(event.session, answer, now))


@contextlib.asynccontextmanager
async def far_end(behaviour: str = "answer",
                  config: UserAgentConfig | None = None) -> AsyncIterator[FarEnd]:
    shell = SipShell(UserAgent(config))
    await shell.listen(LOOPBACK)
    phone = FarEnd(shell, EmbeddedRelay("127.0.0.1", PortRange(20000, 30000), fast_path=False),
                   behaviour)
    shell.on_event = phone.on_event
    try:
        yield phone
    finally:
        await phone.relay.close()
        await shell.close()


def probe(destination: str, **settings: Any) -> ProbeReport:
    return asyncio.run(asyncio.wait_for(
        run_probe(ProbeSettings(destination, listen=LOOPBACK, **settings)), 20))


def against(behaviour: str, config: UserAgentConfig | None = None,
            **settings: Any) -> tuple[ProbeReport, FarEnd]:
    """Probe a far end that lives for exactly as long as the probe."""
    async def run() -> tuple[ProbeReport, FarEnd]:
        async with far_end(behaviour, config) as phone:
            report = await run_probe(ProbeSettings(
                f"sip:human@127.0.0.1:{phone.port}", listen=LOOPBACK,
                **_with_trunk(settings, phone.port)))
            return report, phone
    return asyncio.run(asyncio.wait_for(run(), 20))


def _with_trunk(settings: dict[str, Any], port: int) -> dict[str, Any]:
    password = settings.pop("password", None)
    if password is not None:
        account = Credentials("alice", password)
        settings["trunks"] = Trunks((Trunk("office", SipUri(host="127.0.0.1", port=port),
                                           account),))
    return settings


def test_the_trunks_account_passes_the_challenge_and_is_never_printed() -> None:
    report, _ = against("answer", CHALLENGING, password="wonderland", timeout=2)
    options = report.options
    assert report.exit_code == EXIT_OK and report.trunk == "office"
    assert options is not None and options.challenged
    assert options.auth is AuthOutcome.ACCEPTED and options.realm == "warmline"
    assert options.features["REFER"] is True
    for shown in (render_text(report), render_json(report)):
        assert "wonderland" not in shown and "auth: accepted" in shown.replace('"auth": "',
                                                                                "auth: ")


def test_a_wrong_password_is_an_auth_failure() -> None:
    report, _ = against("answer", CHALLENGING, password="looking-glass", timeout=2)
    assert report.exit_code == EXIT_FAILED and report.options is not None
    assert report.options.auth is AuthOutcome.REJECTED and report.options.status == 401
    assert "looking-glass" not in render_text(report) + render_json(report)


def test_a_challenge_without_a_trunk_account() -> None:
    report, _ = against("answer", CHALLENGING, timeout=2)
    assert report.exit_code == EXIT_FAILED and report.options is not None
    assert report.options.auth is AuthOutcome.NO_CREDENTIALS


def test_silence_is_a_408_within_the_timeout_and_a_closed_port_fails_at_once() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        report = probe(f"sip:human@127.0.0.1:{port}", timeout=0.5, call=True)
    assert report.exit_code == EXIT_FAILED and report.options is not None
    assert (report.options.status, report.options.reason) == (408, "no answer within 0.5 s")
    assert report.call is None  # nothing answered OPTIONS: no call placed
    closed = probe(f"sip:human@127.0.0.1:{port}", timeout=2)
    assert closed.options is not None and closed.options.status == 503  # ICMP (Linux)
    assert closed.options.reason.startswith("unreachable")


def test_the_call_plays_the_tone_and_counts_what_comes_back() -> None:
    report, phone = against("answer", timeout=3, call=True)
    call = report.call
    assert report.exit_code == EXIT_OK, render_text(report)
    assert call is not None and call.answered and call.ended == "BYE answered"
    assert call.codecs == ("PCMA", "telephone-event") and call.codec == "PCMA"
    assert call.packets_received > 20 and call.tone_ms >= 900
    assert _peak_frequency(phone.heard) == 1000
    assert json.loads(render_json(report))["call"]["packets_received"] == call.packets_received


def test_a_refused_call_is_reported_with_its_status() -> None:
    report, _ = against("refuse", timeout=2, call=True)
    assert report.call is not None and (report.call.status, report.call.answered) == (486, False)
    assert report.exit_code == EXIT_FAILED
    assert report.verdict == "call not answered: 486 Busy Here"


def test_a_call_left_ringing_is_cancelled_at_the_timeout() -> None:
    report, _ = against("ring", timeout=1, call=True)
    call = report.call
    assert call is not None and call.status == 408 and call.progress == (180,)
    assert call.ended == "cancelled" and report.exit_code == EXIT_FAILED


def _peak_frequency(frames: list[Samples]) -> int:
    audio = np.concatenate(frames).astype(np.float64) if frames else np.zeros(8000)
    spectrum = np.abs(np.fft.rfft(audio))
    return int(round(float(np.argmax(spectrum)) * 8000 / len(audio) / 10) * 10)

