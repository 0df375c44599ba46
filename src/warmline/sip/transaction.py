"""The four RFC 3261 §17 transaction state machines, with RFC 6026's Accepted state.

Each machine is pure: it is fed messages and the current time and returns
what to send and what to tell the transaction user. Timers are kept as
absolute deadlines; the owner calls :meth:`Transaction.on_timer` at or after
:attr:`Transaction.deadline`. Retransmission timers exist only over UDP.
"""

from __future__ import annotations

import enum

from warmline.sip.events import (
    ResponseReceived,
    Target,
    TransactionTerminated,
    TransactionTimeout,
    Transmit,
)
from warmline.sip.message import Request, Response
from warmline.sip.timers import TimerSettings

Output = Transmit | ResponseReceived | TransactionTimeout | TransactionTerminated


class State(enum.Enum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class Transaction:
    """Shared timer bookkeeping for the four machines."""

    def __init__(self, request: Request, target: Target, settings: TimerSettings) -> None:
        self.request = request
        self.target = target
        self.settings = settings
        self.reliable = target.reliable
        self.state = State.TRYING
        self.branch = request.top_via.branch or ""
        self.scheduled: float | None = None  # deadline the owner's heap holds
        self._timers: dict[str, float] = {}
        self._intervals: dict[str, float] = {}

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def terminated(self) -> bool:
        return self.state is State.TERMINATED

    @property
    def deadline(self) -> float | None:
        return min(self._timers.values()) if self._timers else None

    def on_timer(self, now: float) -> list[Output]:
        out: list[Output] = []
        for name, when in sorted(self._timers.items(), key=lambda item: item[1]):
            if when <= now and self._timers.get(name) == when:
                del self._timers[name]
                self._fire(name, now, out)
        return out

    def fail(self) -> list[Output]:
        """The transport reported an error: end now, reported to the TU as a timeout."""
        out: list[Output] = []
        if not self.terminated:
            out.append(TransactionTimeout(self, transport_error=True))
            self._terminate(out)
        return out

    def _start_timer(self, name: str, now: float, interval: float) -> None:
        self._intervals[name] = interval
        self._timers[name] = now + interval

    def _stop_timers(self, *names: str) -> None:
        for name in names:
            self._timers.pop(name, None)

    def _terminate(self, out: list[Output]) -> None:
        if self.state is not State.TERMINATED:
            self.state = State.TERMINATED
            self._timers.clear()
            out.append(TransactionTerminated(self))

    def _linger(self, name: str, now: float, interval: float, out: list[Output]) -> None:
        """Start the absorb-retransmissions timer, or end at once over streams."""
        if interval <= 0:
            self._terminate(out)
        else:
            self._start_timer(name, now, interval)

    def _fire(self, name: str, now: float, out: list[Output]) -> None:
        raise NotImplementedError


class ClientTransaction(Transaction):
    """Common part of the client machines: the request bytes to (re)send."""

    def __init__(self, request: Request, target: Target, settings: TimerSettings) -> None:
        super().__init__(request, target, settings)
        self._wire = request.to_bytes()
        self.last_response: Response | None = None

    def start(self, now: float) -> list[Output]:
        raise NotImplementedError

    def receive(self, response: Response, now: float) -> list[Output]:
        raise NotImplementedError

    def _send(self, out: list[Output]) -> None:
        out.append(Transmit(self.target, self._wire))


class InviteClientTransaction(ClientTransaction):
    """RFC 3261 §17.1.1 with RFC 6026 (Accepted state absorbs 2xx retransmissions)."""

    def start(self, now: float) -> list[Output]:
        out: list[Output] = []
        self.state = State.CALLING
        self._send(out)
        if not self.reliable:
            self._start_timer("A", now, self.settings.t1)
        self._start_timer("B", now, self.settings.timeout)
        return out

    def receive(self, response: Response, now: float) -> list[Output]:
        out: list[Output] = []
        status = response.status
        if self.state in (State.CALLING, State.PROCEEDING):
            self.last_response = response
            if status < 200:
                self.state = State.PROCEEDING
                self._stop_timers("A", "B")
            elif status < 300:
                self.state = State.ACCEPTED
                self._stop_timers("A", "B", "cancel")
                self._start_timer("M", now, self.settings.timeout)
            else:
                self.state = State.COMPLETED
                self._stop_timers("A", "B", "cancel")
                out.append(ResponseReceived(response, self))
                out.append(Transmit(self.target, build_ack(self.request, response).to_bytes()))
                self._linger("D", now, 0 if self.reliable else self.settings.timer_d, out)
                return out
            out.append(ResponseReceived(response, self))
        elif self.state is State.ACCEPTED and 200 <= status < 300:
            out.append(ResponseReceived(response, self))  # the TU re-sends its ACK
        elif self.state is State.COMPLETED and status >= 300:
            out.append(Transmit(self.target, build_ack(self.request, response).to_bytes()))
        return out

    def guard_cancel(self, now: float) -> None:
        """RFC 3261 §9.1: give up 64*T1 after CANCEL if no final response came."""
        if self.state in (State.CALLING, State.PROCEEDING):
            self._start_timer("cancel", now, self.settings.timeout)

    def _fire(self, name: str, now: float, out: list[Output]) -> None:
        if name == "A" and self.state is State.CALLING:
            self._send(out)
            self._start_timer("A", now, self._intervals["A"] * 2)
        elif name in ("B", "cancel"):
            out.append(TransactionTimeout(self))
            self._terminate(out)
        elif name in ("D", "M"):
            self._terminate(out)


class NonInviteClientTransaction(ClientTransaction):
    """RFC 3261 §17.1.2."""

    def start(self, now: float) -> list[Output]:
        out: list[Output] = []
        self.state = State.TRYING
        self._send(out)
        if not self.reliable:
            self._start_timer("E", now, self.settings.t1)
        self._start_timer("F", now, self.settings.timeout)
        return out

    def receive(self, response: Response, now: float) -> list[Output]:
        out: list[Output] = []
        if self.state not in (State.TRYING, State.PROCEEDING):
            return out  # retransmitted final in Completed: absorbed
        self.last_response = response
        out.append(ResponseReceived(response, self))
        if response.status < 200:
            self.state = State.PROCEEDING
        else:
            self.state = State.COMPLETED
            self._stop_timers("E", "F")
            self._linger("K", now, 0 if self.reliable else self.settings.t4, out)
        return out

    def _fire(self, name: str, now: float, out: list[Output]) -> None:
        if name == "E" and self.state in (State.TRYING, State.PROCEEDING):
            self._send(out)
            if self.state is State.TRYING:
                interval = min(self._intervals["E"] * 2, self.settings.t2)
            else:
                interval = self.settings.t2
            self._start_timer("E", now, interval)
        elif name == "F":
            out.append(TransactionTimeout(self))
            self._terminate(out)
        elif name == "K":
            self._terminate(out)


class ServerTransaction(Transaction):
    """Common part of the server machines: remembers the last response sent."""

    def __init__(self, request: Request, target: Target, settings: TimerSettings) -> None:
        super().__init__(request, target, settings)
        self.last_response: Response | None = None
        self._last_wire: bytes | None = None

    def respond(self, response: Response, now: float) -> list[Output]:
        raise NotImplementedError

    def receive_retransmission(self, request: Request, now: float) -> list[Output]:
        raise NotImplementedError

    def _send_response(self, response: Response, out: list[Output]) -> None:
        self._last_wire = response.to_bytes()
        out.append(Transmit(self.target, self._last_wire))
        if response.status < 200:
            self.last_response = response
        else:  # from now on only retransmissions are absorbed: keep what they need
            self.request = self.request.skeleton()
            self.last_response = Response(response.status, response.reason)

    def _resend(self, out: list[Output]) -> None:
        if self._last_wire is not None:
            out.append(Transmit(self.target, self._last_wire))

    @property
    def final_sent(self) -> bool:
        return self.last_response is not None and self.last_response.status >= 200

    @property
    def lingering(self) -> bool:
        """Answered for good and only absorbing retransmissions until its Timer J or L:
        all that is left of it fits in a key, a deadline and bytes (:meth:`retire`)."""
        return False

    def retire(self) -> tuple[float, bytes | None]:
        """Stop every timer and hand the layer what a lingering transaction still does:
        (when it ends, the bytes a retransmitted request gets; None: absorbed silently).
        The object stays usable by whoever holds it (the UA takes the 2xx bytes)."""
        deadline = self.deadline
        if not self.lingering or deadline is None:
            raise RuntimeError(f"{self.method} transaction is not lingering ({self.state.value})")
        self._timers.clear()
        return deadline, self._linger_wire()

    def _linger_wire(self) -> bytes | None:
        return self._last_wire


class InviteServerTransaction(ServerTransaction):
    """RFC 3261 §17.2.1 with RFC 6026: 2xx moves to Accepted, the TU retransmits it.

    100 Trying goes out only if the TU has not answered within ``TRYING_DELAY``
    (the RFC allows skipping it when the TU answers within 200 ms): an
    application that answers at once saves a message per call.
    """

    TRYING_DELAY = 0.1

    def __init__(self, request: Request, target: Target, settings: TimerSettings,
                 now: float = 0.0) -> None:
        super().__init__(request, target, settings)
        self.state = State.PROCEEDING
        self._start_timer("trying", now, self.TRYING_DELAY)

    @property
    def wire(self) -> bytes | None:
        """The bytes of the last response sent (the UA core retransmits 2xx with them)."""
        return self._last_wire

    def hand_over_2xx(self) -> bytes:
        """The 2xx just sent, for the UA core to retransmit until the ACK (RFC 6026: the
        transaction never resends a 2xx, so it forgets the bytes for its 32 s in Accepted)."""
        if self.state is not State.ACCEPTED or self._last_wire is None:
            raise RuntimeError(f"no 2xx to hand over ({self.state.value})")
        wire, self._last_wire = self._last_wire, None
        return wire

    def respond(self, response: Response, now: float) -> list[Output]:
        out: list[Output] = []
        if self.state is not State.PROCEEDING:
            raise RuntimeError(f"INVITE transaction already answered ({self.state.value})")
        self._stop_timers("trying")
        self._send_response(response, out)
        if response.status < 200:
            return out
        if response.status < 300:
            self.state = State.ACCEPTED
            self._start_timer("L", now, self.settings.timeout)
        else:
            self.state = State.COMPLETED
            if not self.reliable:
                self._start_timer("G", now, self.settings.t1)
            self._start_timer("H", now, self.settings.timeout)
        return out

    @property
    def lingering(self) -> bool:
        """Accepted (a 2xx sent; RFC 6026): retransmitted INVITEs are absorbed, the ACK
        goes to the UA core, Timer L ends it."""
        return self.state is State.ACCEPTED and "L" in self._timers

    def _linger_wire(self) -> bytes | None:
        return None  # the UA core resends the 2xx (RFC 6026 §8.5), never the transaction

    def receive_retransmission(self, request: Request, now: float) -> list[Output]:
        out: list[Output] = []
        if request.method == "ACK":
            if self.state is State.COMPLETED:
                self.state = State.CONFIRMED
                self._stop_timers("G", "H")
                self._linger("I", now, 0 if self.reliable else self.settings.t4, out)
        elif self.state in (State.PROCEEDING, State.COMPLETED):
            self._resend(out)
        return out

    def _fire(self, name: str, now: float, out: list[Output]) -> None:
        if name == "trying" and self.state is State.PROCEEDING and self.last_response is None:
            self._send_response(trying(self.request), out)
        elif name == "G" and self.state is State.COMPLETED:
            self._resend(out)
            self._start_timer("G", now, min(self._intervals["G"] * 2, self.settings.t2))
        elif name == "H":
            out.append(TransactionTimeout(self))
            self._terminate(out)
        elif name in ("I", "L"):
            self._terminate(out)


class NonInviteServerTransaction(ServerTransaction):
    """RFC 3261 §17.2.2."""

    def respond(self, response: Response, now: float) -> list[Output]:
        out: list[Output] = []
        if self.state not in (State.TRYING, State.PROCEEDING):
            raise RuntimeError(f"{self.method} transaction already answered")
        self._send_response(response, out)
        if response.status < 200:
            self.state = State.PROCEEDING
        else:
            self.state = State.COMPLETED
            self._linger("J", now, 0 if self.reliable else self.settings.timeout, out)
        return out

    @property
    def lingering(self) -> bool:
        """Completed over UDP: a retransmitted request gets the final response again,
        Timer J ends it (RFC 3261 §17.2.2)."""
        return self.state is State.COMPLETED and "J" in self._timers

    def receive_retransmission(self, request: Request, now: float) -> list[Output]:
        out: list[Output] = []
        if self.state in (State.PROCEEDING, State.COMPLETED):
            self._resend(out)
        return out

    def _fire(self, name: str, now: float, out: list[Output]) -> None:
        if name == "J":
            self._terminate(out)


def trying(request: Request) -> Response:
    """100 Trying for an INVITE (§8.2.6.1: no To tag, headers copied)."""
    headers = [(name, value) for name, value in request.headers if name == "via"]
    headers += [(name, request.get(name) or "") for name in ("from", "to", "call-id", "cseq")]
    return Response(100, "Trying", headers)


def build_ack(invite: Request, response: Response) -> Request:
    """The ACK for a non-2xx final response (RFC 3261 §17.1.1.3)."""
    headers: list[tuple[str, str]] = [("Via", str(invite.top_via))]
    headers += [("Route", value) for value in invite.values("route")]
    headers += [
        ("Max-Forwards", "70"),
        ("From", invite.get("from") or ""),
        ("To", response.get("to") or ""),
        ("Call-ID", invite.call_id),
        ("CSeq", f"{invite.cseq.seq} ACK"),
    ]
    return Request("ACK", invite.uri, headers)
