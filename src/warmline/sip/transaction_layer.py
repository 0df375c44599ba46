"""The transaction layer: matches messages to transactions and runs their timers.

It owns every live transaction, a heap of their deadlines, and an outbox of
:class:`Transmit` records that the shell drains after each call.

A server transaction answered for good (a non-INVITE's final response over UDP,
an INVITE's 2xx) only absorbs retransmissions for 32 s (Timer J, Timer L). The
layer keeps it then as a key, a deadline and the bytes to resend, in a dict and
a FIFO of deadlines (every such timer is 64*T1, so the FIFO stays in order),
and drops the transaction object. Those entries are tuples of strings, floats
and bytes, which the cyclic garbage collector stops tracking after one look:
tens of thousands of answered calls a second otherwise left millions of objects
for it to walk, in pauses of hundreds of milliseconds that made every peer
retransmit. Requests get
``received``/``rport`` stamped on their top Via (RFC 3261 §18.2.1, RFC 3581),
and responses are routed back by the rules of §18.2.2.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterable

from warmline.sip.events import (
    RequestReceived,
    ResponseReceived,
    Target,
    TransactionEvent,
    TransactionTerminated,
    TransactionTimeout,
    Transmit,
)
from warmline.sip.message import Message, Request, Response
from warmline.sip.timers import TimerSettings
from warmline.sip.transaction import (
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    NonInviteClientTransaction,
    NonInviteServerTransaction,
    Output,
    ServerTransaction,
    Transaction,
)

ServerKey = tuple[str, ...]
# an answered server transaction: its end, its answer's bytes (None: absorb copies) and
# where that answer went (a Target's fields), so a copy from elsewhere is not answered there
Lingering = tuple[float, bytes | None, str, str, int, int | None]
# what a lingering answer costs next to a live server transaction: ~0.6 KB (key, end,
# the bytes to resend) against ~2 KB (measured with tracemalloc, BYE over UDP)
LINGER_WEIGHT = 3


def server_key(request: Request, method: str | None = None) -> ServerKey:
    """The key matching a request to its server transaction (§17.2.3).

    RFC 3261 branches match on branch, sent-by and method (ACK counts as
    INVITE). RFC 2543 peers without the magic cookie fall back to the
    Request-URI, From tag, Call-ID, CSeq number and top Via.
    """
    via = request.top_via
    method = method or ("INVITE" if request.method == "ACK" else request.method)
    if via.is_rfc3261:
        return (via.branch or "", via.sent_by, method)
    return (
        "rfc2543",
        str(request.uri),
        request.from_.tag or "",
        request.call_id,
        str(request.cseq.seq),
        via.sent_by,
        method,
    )


def response_target(message: Message, source: Target) -> Target:
    """Where responses to a request with these Vias go (RFC 3261 §18.2.2, RFC 3581).

    Streams answer on the same connection. Over UDP the host is the packet's
    source (what ``received`` records) and the port is the source port when
    the client asked for ``rport``, else the sent-by port.
    """
    if source.reliable:
        return source
    via = message.top_via
    port = via.rport or (source.port if via.wants_rport else None) or via.port or 5060
    return Target("udp", source.host, port)


class TransactionLayer:
    """Sans-IO owner of all transactions of one endpoint."""

    def __init__(self, settings: TimerSettings | None = None) -> None:
        self.settings = settings or TimerSettings()
        self._clients: dict[tuple[str, str], ClientTransaction] = {}
        self._servers: dict[ServerKey, ServerTransaction] = {}
        self._heap: list[tuple[float, int, Transaction]] = []
        self._order = itertools.count()
        self._outbox: list[Transmit] = []
        # answered server transactions absorbing retransmissions: key -> (until, the bytes
        # a retransmitted request gets, None: absorbed silently); their ends, oldest first
        # and where it went, flat (atoms only: a tuple the cyclic GC stops walking)
        self._lingering: dict[ServerKey, Lingering] = {}
        self._linger_ends: deque[tuple[float, ServerKey]] = deque()

    # -- outgoing ---------------------------------------------------------
    def send_request(self, request: Request, target: Target, now: float) -> ClientTransaction:
        """Start a client transaction; ACK is not a transaction and must use send_raw."""
        if request.method == "ACK":
            raise ValueError("ACK is sent with send_raw, not in a transaction")
        factory = (
            InviteClientTransaction if request.method == "INVITE" else NonInviteClientTransaction
        )
        transaction = factory(request, target, self.settings)
        self._clients[(transaction.branch, request.method)] = transaction
        self._absorb(transaction, transaction.start(now), [])
        return transaction

    def respond(
        self, transaction: ServerTransaction, response: Response, now: float
    ) -> list[TransactionEvent]:
        events: list[TransactionEvent] = []
        outputs = transaction.respond(response, now)
        if transaction.lingering:
            self._outbox.extend(out for out in outputs if isinstance(out, Transmit))
            self._linger(transaction)
            return events
        self._absorb(transaction, outputs, events)
        return events

    def send_raw(self, target: Target, data: bytes) -> None:
        """Send outside any transaction: ACK for 2xx, 2xx retransmissions, stateless replies."""
        self._outbox.append(Transmit(target, data))

    def guard_cancel(self, transaction: InviteClientTransaction, now: float) -> None:
        transaction.guard_cancel(now)
        self._schedule(transaction)

    @property
    def server_count(self) -> int:
        """Server transactions held now (answered ones stay for their Timer J/L)."""
        return len(self._servers) + len(self._lingering)

    @property
    def load(self) -> int:
        """Server transactions held, a lingering answer counted as a third of a live one
        (its memory): what ``[limits] max_transactions`` bounds."""
        return len(self._servers) + len(self._lingering) // LINGER_WEIGHT

    def holds(self, request: Request) -> bool:
        """Whether ``request`` belongs to a server transaction we already hold."""
        key = server_key(request)
        return key in self._servers or key in self._lingering

    def answered_invite(self, cancel: Request) -> bool:
        """Whether the INVITE a CANCEL names was answered 2xx and is still absorbing
        retransmissions (the CANCEL then gets 200 and changes nothing, RFC 3261 §9.2)."""
        return server_key(cancel, "INVITE") in self._lingering

    # -- incoming ---------------------------------------------------------
    def receive_request(
        self, request: Request, source: Target, now: float
    ) -> list[TransactionEvent]:
        stamp_via(request, source)
        key = server_key(request)
        existing = self._servers.get(key)
        events: list[TransactionEvent] = []
        if request.method == "ACK":
            if isinstance(existing, InviteServerTransaction) and not _is_2xx(existing):
                self._absorb(existing, existing.receive_retransmission(request, now), events)
            else:
                events.append(RequestReceived(request, source, None))
            return events
        if existing is not None:
            self._absorb(existing, existing.receive_retransmission(request, now), events)
            return events
        lingering = self._lingering.get(key)
        if lingering is not None:  # a retransmission of a request answered for good
            if lingering[1] is not None:  # to where the answer first went (no reflection)
                self._outbox.append(Transmit(Target(*lingering[2:]), lingering[1]))
            return events
        target = response_target(request, source)
        transaction: ServerTransaction
        if request.method == "INVITE":
            transaction = InviteServerTransaction(request, target, self.settings, now)
            self._schedule(transaction)
        else:
            transaction = NonInviteServerTransaction(request, target, self.settings)
        self._servers[key] = transaction
        events.append(RequestReceived(request, source, transaction))
        return events

    def receive_response(self, response: Response, now: float) -> list[TransactionEvent]:
        via = response.top_via
        transaction = self._clients.get((via.branch or "", response.cseq.method))
        events: list[TransactionEvent] = []
        if transaction is None:
            if response.cseq.method == "INVITE" and response.is_success:
                events.append(ResponseReceived(response, None))  # late 2xx: the TU re-ACKs
            return events
        self._absorb(transaction, transaction.receive(response, now), events)
        return events

    def transport_error(self, target: Target, now: float) -> list[TransactionEvent]:
        """Fail every client transaction bound for ``target`` (treated like a timeout)."""
        events: list[TransactionEvent] = []
        address = (target.transport, target.host, target.port)
        for transaction in list(self._clients.values()):
            sent_to = transaction.target
            if (sent_to.transport, sent_to.host, sent_to.port) == address:
                self._absorb(transaction, transaction.fail(), events)
        return events

    def find_invite_server(self, cancel: Request) -> InviteServerTransaction | None:
        """The INVITE transaction a CANCEL targets (same key, method INVITE)."""
        found = self._servers.get(server_key(cancel, "INVITE"))
        return found if isinstance(found, InviteServerTransaction) else None

    # -- time -------------------------------------------------------------
    def next_deadline(self) -> float | None:
        first = self._heap[0][0] if self._heap else None
        if self._linger_ends and (first is None or self._linger_ends[0][0] < first):
            return self._linger_ends[0][0]
        return first

    def handle_timer(self, now: float) -> list[TransactionEvent]:
        events: list[TransactionEvent] = []
        ends, lingering = self._linger_ends, self._lingering
        while ends and ends[0][0] <= now:
            until, key = ends.popleft()
            entry = lingering.get(key)
            if entry is not None and entry[0] == until:  # not a later one with the same key
                del lingering[key]
        heap = self._heap
        while heap and heap[0][0] <= now:
            _, _, transaction = heapq.heappop(heap)
            if transaction.terminated:
                continue
            transaction.scheduled = None
            self._absorb(transaction, transaction.on_timer(now), events)
        return events

    def pop_transmissions(self) -> list[Transmit]:
        out, self._outbox = self._outbox, []
        return out

    @property
    def transaction_count(self) -> int:
        return len(self._clients) + len(self._servers) + len(self._lingering)

    # -- internals --------------------------------------------------------
    def _absorb(
        self, transaction: Transaction, outputs: Iterable[Output], events: list[TransactionEvent]
    ) -> None:
        for output in outputs:
            if isinstance(output, Transmit):
                self._outbox.append(output)
                continue
            if isinstance(output, TransactionTerminated):
                self._forget(transaction)
            elif isinstance(output, ResponseReceived | TransactionTimeout):
                events.append(output)
        if not transaction.terminated:
            self._schedule(transaction)

    def _linger(self, transaction: ServerTransaction) -> None:
        """Keep an answered server transaction as a key, its end and its bytes."""
        key = server_key(transaction.request)
        if self._servers.get(key) is transaction:
            del self._servers[key]
        until, wire = transaction.retire()
        if self._linger_ends and until < self._linger_ends[-1][0]:
            until = self._linger_ends[-1][0]  # keep the FIFO in order (a shade longer)
        target = transaction.target
        self._lingering[key] = (until, wire, target.transport, target.host, target.port,
                                target.connection)
        self._linger_ends.append((until, key))

    def _schedule(self, transaction: Transaction) -> None:
        deadline = transaction.deadline
        if deadline is None:
            return
        if transaction.scheduled is None or deadline < transaction.scheduled:
            transaction.scheduled = deadline
            heapq.heappush(self._heap, (deadline, next(self._order), transaction))

    def _forget(self, transaction: Transaction) -> None:
        if isinstance(transaction, ClientTransaction):
            self._clients.pop((transaction.branch, transaction.method), None)
        else:
            key = server_key(transaction.request)
            if self._servers.get(key) is transaction:
                del self._servers[key]


def _is_2xx(transaction: ServerTransaction) -> bool:
    response = transaction.last_response
    return response is not None and 200 <= response.status < 300


def stamp_via(request: Request, source: Target) -> None:
    """Add ``received`` and fill ``rport`` on the top Via (RFC 3261 §18.2.1, RFC 3581)."""
    via = request.top_via
    stamped = via
    if via.host_differs(source.host):
        stamped = stamped.with_param("received", source.host)
    if via.wants_rport and via.rport is None:
        stamped = stamped.with_param("rport", str(source.port))
    if stamped is not via:
        request.replace_first_value("via", str(stamped))
