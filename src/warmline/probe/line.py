"""The probe's own SIP line: one UA on one UDP port, its events as awaitables, a trace.

The probe is a client of the same core and shell the engine runs, nothing
special-cased: OPTIONS goes through ``UserAgent.probe`` (which answers one
digest challenge with the trunk's account) and the test call through
``UserAgent.invite``. This module turns the shell's event callback into
things to await, each bounded by the caller's timeout, and keeps every
message sent and received (``SipShell.tap``) so the OPTIONS exchange can be
read afterwards: whether it was challenged, the round-trip time.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from warmline.calls.trunks import Route
from warmline.media.negotiation import Negotiation
from warmline.media.relay import EmbeddedRelay, PortRange
from warmline.media.sdp import SdpError
from warmline.probe.checks import OptionsCheck, Seen, read_options
from warmline.sip.events import Target
from warmline.sip.session import (
    CallAnswered,
    CallConfirmed,
    CallEnded,
    CallFailed,
    CallProgress,
    IncomingCall,
    InDialogResponse,
    Probe,
    ProbeResult,
    RequestInDialog,
    Session,
    SessionEvent,
)
from warmline.sip.useragent import UserAgent
from warmline.transport.listen import ListenSpec
from warmline.transport.resolver import Resolver
from warmline.transport.shell import SipShell

_CALL_EVENTS = (CallProgress, CallAnswered, CallConfirmed, CallFailed, CallEnded,
                InDialogResponse)
MEDIA_PORTS = (20000, 30000)  # the test call's RTP; ports in use are skipped
_TRACE_LIMIT = 200  # messages kept; a probe exchanges a dozen


def describe_target(target: Target) -> str:
    """``udp:127.0.0.1:5060`` (IPv6 in brackets), the form --sip takes too."""
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{target.transport}:{host}:{target.port}"


@dataclass(eq=False)
class CallEvents:
    """The events of one outbound session, in order, for the test call to await."""

    queue: asyncio.Queue[SessionEvent] = field(default_factory=asyncio.Queue)
    negotiation: Negotiation | None = None  # answers a re-INVITE/UPDATE mid-test

    async def next(self, seconds: float) -> SessionEvent | None:
        """The next event, or None when none came within ``seconds``."""
        try:
            return await asyncio.wait_for(self.queue.get(), max(seconds, 0.0))
        except TimeoutError:
            return None


class ProbeLine:
    """A SIP endpoint of the probe's own, with a media relay for the test call."""

    def __init__(self, shell: SipShell, address: ListenSpec, media_address: str) -> None:
        self.shell = shell
        self.address = address  # as bound (the real port)
        self.media_address = media_address  # what the test call's SDP says
        self.relay = EmbeddedRelay(address.host, PortRange(*MEDIA_PORTS), fast_path=False)
        self.trace: list[Seen] = []
        self._probes: dict[int, asyncio.Future[int]] = {}  # by id() of the Probe
        self._calls: dict[str, CallEvents] = {}  # by session id
        shell.on_event = self._on_event
        shell.tap = self._record

    @classmethod
    async def open(cls, spec: ListenSpec, media_address: str, resolver: Resolver) -> ProbeLine:
        """Bind ``spec`` (port 0 picks one); OSError when it cannot be bound.

        ``resolver`` is the probe's own (its DNS servers), for a far end whose
        Contact names a host.
        """
        shell = SipShell(UserAgent(), resolver=resolver)
        try:
            bound = await shell.listen(spec)
        except OSError:
            await shell.close()
            raise
        return cls(shell, bound, media_address)

    async def close(self) -> None:
        await self.relay.close()
        await self.shell.close()

    # ------------------------------------------------------------------ OPTIONS
    async def options(self, route: Route, target: Target, timeout: float) -> OptionsCheck:
        """One OPTIONS to ``target`` for ``route``; a challenge answered with its account.

        Nothing back within ``timeout`` is reported as 408.
        """
        self.trace.clear()
        done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        probe = self.shell.run(lambda now: self.shell.ua.probe(
            route.request_uri, now, target=target, credentials=route.credentials,
            headers=route.headers))
        self._probes[id(probe)] = done
        try:
            status, reason = await asyncio.wait_for(done, timeout), ""
        except TimeoutError:
            status, reason = 408, f"no answer within {timeout:g} s"
        finally:
            self._probes.pop(id(probe), None)
        return read_options(describe_target(target), list(self.trace), status,
                            reason or _reason(probe), probe.response)

    # ------------------------------------------------------------------ calls
    def watch(self, session: Session) -> CallEvents:
        """Deliver ``session``'s events to the returned queue from now on."""
        events = self._calls[session.id] = CallEvents()
        return events

    def forget(self, session: Session) -> None:
        self._calls.pop(session.id, None)

    # ------------------------------------------------------------------ events
    def _on_event(self, event: SessionEvent) -> None:
        if isinstance(event, ProbeResult):
            waiter = self._probes.get(id(event.probe))
            if waiter is not None and not waiter.done():
                waiter.set_result(event.status)
        elif isinstance(event, IncomingCall):  # nobody calls a probe
            self.shell.run(lambda now: self.shell.ua.reject(event.session, 603, now))
        elif isinstance(event, RequestInDialog):
            self._answer_in_dialog(event)
        elif isinstance(event, _CALL_EVENTS):
            events = self._calls.get(event.session.id)
            if events is not None:
                events.queue.put_nowait(event)

    def _answer_in_dialog(self, event: RequestInDialog) -> None:
        """A re-INVITE/UPDATE gets our answer, a REFER 403, anything else 200."""
        ua, session, request = self.shell.ua, event.session, event.request
        status, body = 200, b""
        if request.method == "REFER":
            status = 403
        elif request.method in ("INVITE", "UPDATE") and request.body:
            status, body = self._answer_offer(session, request.body)
        self.shell.run(lambda now: ua.respond(event.transaction, status, now, session=session,
                                              body=body))

    def _answer_offer(self, session: Session, offer: bytes) -> tuple[int, bytes]:
        events = self._calls.get(session.id)
        if events is None or events.negotiation is None:
            return 488, b""
        try:
            return 200, events.negotiation.answer(offer)
        except SdpError as error:
            return error.status, b""

    def _record(self, direction: str, data: bytes, peer: Target) -> None:
        if len(self.trace) < _TRACE_LIMIT:
            self.trace.append(Seen(direction, time.perf_counter(), data))


def _reason(probe: Probe) -> str:
    """The answer's reason phrase, or what the core's own 408/503 mean."""
    if probe.response is not None:
        return probe.response.reason
    if probe.status == 503:
        return "unreachable (ICMP error or refused connection)"
    return "no answer (transaction timed out)"
