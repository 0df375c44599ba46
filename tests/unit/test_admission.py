"""A node behind on its SIP input caps new calls (AIMD) and says 503; the probe that times
a UDP listener's queue; a single stall of the loop caps nothing."""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest

from tests.unit.test_useragent import BOB, SDP_A, call, only, pair
from warmline.sip.admission import MIN_RATE, CallAdmission
from warmline.sip.events import Target
from warmline.sip.message import Response, parse_message
from warmline.sip.session import CallEnded, CallFailed, IncomingCall, ProbeResult
from warmline.sip.useragent import UserAgent, UserAgentConfig
from warmline.transport.backlog import BacklogProbe
from warmline.transport.listen import ListenSpec
from warmline.transport.shell import SipShell


def offer(admission: CallAdmission, rate: float, start: float, seconds: float) -> int:
    """New calls at ``rate`` a second from ``start``; how many were taken."""
    count = int(rate * seconds)
    return sum(admission.admit(start + n / rate) for n in range(count))


def test_a_backlog_cuts_new_calls_to_half_then_grows_back_and_lifts_the_cap() -> None:
    admission = CallAdmission(0.3)
    assert offer(admission, 600, 0.0, 1.0) == 600 and not admission.capped
    admission.measured(0.4, 1.0)  # one slow probe: maybe a stall, nothing capped
    assert not admission.capped
    admission.measured(0.1, 1.1)  # between half and the limit: nothing changes either
    admission.measured(0.35, 1.2)
    admission.measured(0.5, 1.3)  # the second in a row over the limit
    assert admission.cap == pytest.approx(300, rel=0.05)  # half of what was taken
    taken = offer(admission, 600, 1.3, 2.0)
    assert taken == pytest.approx(600, rel=0.05)  # 300 a second: the rest refused
    assert admission.refused == pytest.approx(600, rel=0.05)
    admission.measured(0.4, 3.3)  # still behind: a tenth less, at most once a second
    admission.measured(0.4, 3.4)
    assert admission.cap == pytest.approx(270, rel=0.05)
    for step in range(40):  # caught up: a twentieth more every half second...
        admission.measured(0.01, 4.0 + step * 0.5)
        offer(admission, 200, 4.0 + step * 0.5, 0.5)  # callers now ask for 200 a second
    assert not admission.capped  # ...and lifted once well above what is asked


def test_a_cap_never_shuts_a_quiet_node() -> None:
    admission = CallAdmission(0.3)
    offer(admission, 2, 0.0, 3.0)
    admission.measured(0.5, 3.0)
    admission.measured(0.5, 3.2)
    assert admission.cap == MIN_RATE
    assert all(admission.admit(3.2 + n * 0.01) for n in range(5))  # a burst of five passes


def test_a_capped_ua_refuses_new_calls_and_probes_503_but_not_its_dialogs() -> None:
    net, alice, bob = pair()
    outbound, _ = call(net, alice, bob)
    bob.admission.measured(1.0, net.now)
    bob.admission.measured(1.0, net.now)
    bob.admission.cap = 1.0  # one call a second, no burst left
    bob.admission._tokens = 0.0
    refused = alice.invite("sip:bob@example.com", net.now, sdp=SDP_A, target=Target("udp", *BOB))
    [failed] = only(net.take(alice), CallFailed)
    assert failed.session is refused and failed.status == 503
    assert not only(net.take(bob), IncomingCall)
    [answer] = [parse_message(t.data) for t in net.sent_by(bob, b"SIP/2.0 503")][:1]
    assert isinstance(answer, Response) and answer.get("retry-after") == "5"
    assert 'text="overloaded"' in (answer.get("reason") or "")
    alice.probe("sip:bob@127.0.0.2:5080", net.now)
    assert only(net.take(alice), ProbeResult)[0].status == 503
    assert bob.counters.refused_backlogged == 2
    alice.bye(outbound, net.now)  # the live call still ends normally
    assert only(net.take(bob), CallEnded)


def test_the_probe_times_the_listener_queue_and_reports_a_late_probe_once() -> None:
    async def scenario() -> list[float]:
        loop = asyncio.get_running_loop()
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.bind(("127.0.0.1", 0))
        listener.setblocking(False)
        waits: list[float] = []
        probe = BacklogProbe(loop, listener.getsockname(), waits.append, late_after=0.3)
        try:
            await asyncio.sleep(0.25)  # the listener reads nothing: the first probe waits
            await asyncio.sleep(0.3)  # past late_after: reported while still in the queue
            late = list(waits)
            data, source = listener.recvfrom(100)  # read now: not reported a second time
            assert source == probe.source
            probe.arrived(data)
            probe.arrived(b"someone else's datagram from that port")
            assert waits == late
            for _ in range(20):  # read promptly from now on: short waits
                await asyncio.sleep(0.05)
                with contextlib.suppress(BlockingIOError):
                    probe.arrived(listener.recvfrom(100)[0])
            return waits
        finally:
            probe.close()
            listener.close()

    waits = asyncio.run(scenario())
    assert len(waits) >= 4 and 0.3 <= waits[0] < 0.6
    assert all(wait < 0.1 for wait in waits[1:])


def test_a_shell_times_each_udp_listener_over_ipv4_and_ipv6() -> None:
    """The probes reach the listeners and are taken out before the SIP core: nothing
    counted as garbage, short waits, nothing capped (an IPv6 source address comes as a
    4-tuple: a probe not recognised would be lost and, at 5 s, read as a backlog)."""
    async def scenario() -> tuple[int, float, bool, int]:
        ua = UserAgent(UserAgentConfig(max_queue_delay=0.3))
        shell = SipShell(ua)
        await shell.listen(ListenSpec("udp", "127.0.0.1", 0))
        await shell.listen(ListenSpec("udp", "::1", 0))
        await asyncio.sleep(0.55)
        probes = sum(1 for _, endpoint in shell._udp if endpoint.probe is not None)
        await shell.close()
        return ua.counters.garbage_dropped, ua.admission.last_delay, ua.admission.capped, probes

    garbage, last_delay, capped, probes = asyncio.run(scenario())
    assert probes == 2 and garbage == 0 and last_delay < 0.1 and not capped
