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


def test_a_quiet_listener_does_not_hide_a_flooded_one() -> None:
    admission = CallAdmission(0.3)
    offer(admission, 400, 0.0, 1.0)
    for n in range(6):  # the flooded listener is late every time, the quiet one never
        admission.measured(0.35, 1.0 + n * 0.4, "udp:0.0.0.0:5060")
        admission.measured(0.01, 1.1 + n * 0.4, "udp:[::]:5060")
        admission.measured(0.01, 1.2 + n * 0.4, "udp:[::]:5060")
    assert admission.capped
    for n in range(10):  # only the quiet one has caught up: no growth yet
        admission.measured(0.01, 4.0 + n * 0.5, "udp:[::]:5060")
    assert admission.cap is not None and admission.cap < 200


def test_a_refused_invite_stays_refused_when_it_is_retransmitted() -> None:
    """Its caller's transaction ended with our 503; a copy arriving after a token came back
    is that same call, not a new one (and does not count as asked again)."""
    admission = CallAdmission(0.3)
    offer(admission, 100, 0.0, 1.0)
    admission.measured(0.5, 1.0)
    admission.measured(0.5, 1.1)
    admission._tokens = 0.0
    assert not admission.admit(1.1, ("z9hG4bKa", "127.0.0.9:5060", "INVITE"))
    assert admission.refusing(1.5) and not admission.refusing(2.2)
    assert admission.admit(2.0, ("z9hG4bKb", "127.0.0.9:5060", "INVITE"))  # a token back
    assert not admission.admit(2.0, ("z9hG4bKa", "127.0.0.9:5060", "INVITE"))
    assert admission.admit(40.0, ("z9hG4bKa", "127.0.0.9:5060", "INVITE"))  # 32 s on


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
    # a copy of the refused INVITE arriving once tokens are back: the same refused call
    invite = net.sent_by(alice, b"INVITE sip:bob@example.com")[-1]  # the refused one
    bob.admission.cap, bob.admission._tokens = 100.0, 5.0
    bob.receive(invite.data, Target("udp", *net.address_of(alice)), net.now + 1.0)
    [again] = [parse_message(t.data) for t in bob.pop_transmissions()]
    assert isinstance(again, Response) and again.status == 503
    assert not only(net.take(bob), IncomingCall) and bob.counters.refused_backlogged == 3
    alice.bye(outbound, net.now)  # the live call still ends normally
    assert only(net.take(bob), CallEnded)


def unread_listener() -> socket.socket:
    """A UDP socket on loopback that reads only when the test says so."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    listener.bind(("127.0.0.1", 0))
    listener.setblocking(False)
    return listener


def test_the_probe_times_the_listener_queue_and_reports_a_late_probe_once() -> None:
    async def scenario() -> list[float]:
        listener = unread_listener()
        waits: list[float] = []
        probe = BacklogProbe(asyncio.get_running_loop(), listener.getsockname(), waits.append,
                             late_after=0.3)
        try:
            while not waits:  # the listener reads nothing: the first probe is reported
                await asyncio.sleep(0.02)  # late while still in the queue
            late = list(waits)
            data, source = listener.recvfrom(100)  # read now: not reported a second time
            assert source == probe.source
            probe.arrived(data)
            probe.arrived(b"someone else's datagram from that port")
            assert waits == late
            while len(waits) < 5:  # read promptly from now on: short waits
                await asyncio.sleep(0.02)
                with contextlib.suppress(BlockingIOError):
                    probe.arrived(listener.recvfrom(100)[0])
            return waits
        finally:
            probe.close()
            listener.close()

    waits = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert 0.3 <= waits[0] < 1.0
    assert all(wait < 0.25 for wait in waits[1:])


def test_a_probe_given_up_for_lost_is_not_timed_against_the_next() -> None:
    async def scenario() -> list[float]:
        listener = unread_listener()
        waits: list[float] = []
        probe = BacklogProbe(asyncio.get_running_loop(), listener.getsockname(), waits.append,
                             late_after=0.1)
        probe._lost_after = 0.3  # (at least 5 s in service)
        try:
            while True:  # the first one is given up for lost and a second is sent
                await asyncio.sleep(0.02)
                if probe._sequence >= 2:
                    break
            stale, _ = listener.recvfrom(100)
            probe.arrived(stale)  # the first one, late: not timed against the second
            reported = list(waits)
            fresh, _ = listener.recvfrom(100)
            probe.arrived(fresh)
            assert len(waits) in (len(reported), len(reported) + 1)
            return reported
        finally:
            probe.close()
            listener.close()

    reported = asyncio.run(asyncio.wait_for(scenario(), 10))
    assert reported and all(wait >= 0.1 for wait in reported)  # only the late reports


def test_a_shell_times_each_udp_listener_over_ipv4_and_ipv6() -> None:
    """The probes reach the listeners and are taken out before the SIP core: nothing
    counted as garbage, short waits, nothing capped (an IPv6 source address comes as a
    4-tuple: a probe not recognised would be lost and, at 5 s, read as a backlog)."""
    async def scenario() -> tuple[int, float, bool, int]:
        ua = UserAgent(UserAgentConfig(max_queue_delay=0.3))
        shell = SipShell(ua)
        await shell.listen(ListenSpec("udp", "127.0.0.1", 0))
        await shell.listen(ListenSpec("udp", "::1", 0))
        await asyncio.sleep(0.55)  # several probes each (a tick every 0.1 s)
        probes = sum(1 for _, endpoint in shell._udp if endpoint.probe is not None)
        await shell.close()
        return ua.counters.garbage_dropped, ua.admission.last_delay, ua.admission.capped, probes

    if not socket.has_ipv6:
        pytest.fail("this machine has no IPv6 loopback (::1), which the suite needs")
    garbage, last_delay, capped, probes = asyncio.run(scenario())
    assert probes == 2 and garbage == 0 and last_delay < 0.25 and not capped
