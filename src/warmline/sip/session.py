"""INVITE sessions and REFER subscriptions as the UA core tracks them, and their events."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from warmline.sip.auth import Credentials
from warmline.sip.dialog import Dialog
from warmline.sip.dialog_memo import DialogMemo
from warmline.sip.events import Target
from warmline.sip.headers import NameAddr, Replaces
from warmline.sip.message import Request, Response
from warmline.sip.registration import Registration
from warmline.sip.scheduler import TimerHandle
from warmline.sip.session_timer import Agreement
from warmline.sip.transaction import ClientTransaction, InviteServerTransaction


class SessionState(enum.Enum):
    CALLING = "calling"  # we sent INVITE, nothing final yet
    INCOMING = "incoming"  # we received INVITE, not answered yet
    ANSWERED = "answered"  # we sent 2xx, waiting for the ACK
    CONFIRMED = "confirmed"
    TERMINATING = "terminating"  # we sent BYE or CANCEL
    TERMINATED = "terminated"


@dataclass(eq=False)
class Session:
    """One INVITE dialog usage, inbound or outbound."""

    id: str
    inbound: bool
    invite: Request
    state: SessionState
    local_tag: str
    dialog: Dialog | None = None
    server_transaction: InviteServerTransaction | None = None
    client_transaction: ClientTransaction | None = None
    flow: Target | None = None  # the connection an inbound stream call came over
    source: Target | None = None  # where an inbound INVITE came from (trust decisions)
    target: Target | None = None  # where an outbound INVITE was sent
    local_sdp: bytes | None = None
    remote_sdp: bytes | None = None
    replaces: Replaces | None = None
    replaced: Session | None = None  # the dialog our 2xx to this INVITE ends (RFC 3891 §3)
    end_reason: str | None = None
    end_status: int | None = None
    cancel_requested: bool = False
    cancel_sent: bool = False
    cancel_reason: str | None = None  # the Reason header our CANCEL carries
    hangup_after_ack: bool = False
    auth_attempts: int = 0
    early_dialogs: dict[str, Dialog] = field(default_factory=dict)  # by remote tag
    fallback_targets: list[Target] = field(default_factory=list)  # RFC 3263 failover, in order
    credentials: Credentials | None = None  # the trunk's, for its challenges
    timer: Agreement | None = None  # the RFC 4028 session timer in force
    timer_retries: int = 0  # 422s answered on the initial INVITE
    peer_methods: frozenset[str] = frozenset()  # the far end's Allow (UPDATE for refreshes)
    rseq: int = 0  # the RSeq of our last reliable 1xx (RFC 3262)
    unacked_rseq: int | None = None  # our reliable 1xx waiting for its PRACK
    unacked_has_sdp: bool = False  # that 1xx carried our answer: no 2xx before its PRACK
    deferred_answer: tuple[bytes, list[tuple[str, str]]] | None = None  # a 2xx held for it
    rseqs: dict[str, int] = field(default_factory=dict)  # reliable 1xx PRACKed, by remote tag
    # requests the application sent in the dialog between our 2xx and its ACK: held until
    # the ACK (a REFER sent at once overtook the 2xx through a proxy's parallel workers)
    held_requests: list[tuple[Request, str, Any]] = field(default_factory=list)
    app: dict[str, Any] = field(default_factory=dict)
    # another node serves this dialog now: nothing more is sent in it (a BYE is a let-go)
    let_go: bool = False
    _ack_wire: bytes | None = None
    _ack_target: Target | None = None
    # resends our reliable 1xx, our 2xx to the INVITE, or our 2xx to a re-INVITE (one at a time)
    _retransmit: TimerHandle | None = None
    _reinvite_pending: bool = False
    _incoming_reinvite: InviteServerTransaction | None = None
    # the CSeq of the far end's re-INVITE whose 2xx we resend until its ACK (RFC 3261 §14.2)
    _reinvite_ack_cseq: int | None = None
    _timer_handle: TimerHandle | None = None

    @property
    def call_id(self) -> str:
        return self.invite.call_id

    @property
    def remote_party(self) -> NameAddr:
        return self.invite.from_ if self.inbound else self.invite.to

    @property
    def local_party(self) -> NameAddr:
        return self.invite.to if self.inbound else self.invite.from_

    @property
    def ended(self) -> bool:
        return self.state is SessionState.TERMINATED


@dataclass(eq=False)
class ReferSubscription:
    """A REFER we sent and the implicit subscription its NOTIFYs report on (RFC 3515)."""

    session: Session
    request: Request
    refer_to: NameAddr
    status: int | None = None  # response to the REFER itself (202 expected)
    progress: int | None = None  # last sipfrag status seen
    done: bool = False


@dataclass(eq=False)
class Probe:
    """An out-of-dialog OPTIONS asking whether a destination is there (RFC 3261 §11)."""

    uri: str
    status: int | None = None  # final status; 408 timed out, 503 transport error
    response: Response | None = None  # the final answer (its Allow, Supported ...)
    credentials: Credentials | None = None  # answers the destination's challenge


# -- events handed to the application ------------------------------------
@dataclass(frozen=True, slots=True)
class IncomingCall:
    session: Session


@dataclass(frozen=True, slots=True)
class CallProgress:
    session: Session
    response: Response


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """Our INVITE got a 2xx and the ACK has been sent."""

    session: Session
    response: Response


@dataclass(frozen=True, slots=True)
class CallConfirmed:
    """The ACK for our 2xx arrived."""

    session: Session


@dataclass(frozen=True, slots=True)
class CallFailed:
    """Our INVITE ended without a dialog: non-2xx final, timeout (408), CANCEL (487)."""

    session: Session
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class CallEnded:
    session: Session
    by_remote: bool
    reason: str


@dataclass(frozen=True, slots=True)
class RequestInDialog:
    """A request the application must answer with :meth:`UserAgent.respond`."""

    session: Session
    request: Request
    transaction: object


@dataclass(frozen=True, slots=True)
class InDialogResponse:
    session: Session
    method: str
    response: Response | None  # None: the request timed out


@dataclass(frozen=True, slots=True)
class ReferResponse:
    refer: ReferSubscription
    status: int
    subscribed: bool = True  # False: accepted with Refer-Sub: false, no NOTIFY will come


@dataclass(frozen=True, slots=True)
class ReferNotify:
    """A NOTIFY sipfrag for a REFER we sent; ``final`` when the subscription ended."""

    refer: ReferSubscription
    status: int
    final: bool


@dataclass(frozen=True, slots=True)
class ProbeResult:
    probe: Probe
    status: int


@dataclass(frozen=True, slots=True)
class RegistrationChanged:
    """A registration's state, status or reason changed (see ``registration``)."""

    registration: Registration


@dataclass(frozen=True, slots=True)
class RememberedDialogEnded:
    """The BYE for a dialog a crashed run left up got its answer (``status``: 408 none)."""

    memo: DialogMemo
    status: int


SessionEvent = (
    IncomingCall
    | CallProgress
    | CallAnswered
    | CallConfirmed
    | CallFailed
    | CallEnded
    | RequestInDialog
    | InDialogResponse
    | ReferResponse
    | ReferNotify
    | ProbeResult
    | RegistrationChanged
    | RememberedDialogEnded
)
