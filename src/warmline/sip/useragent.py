"""The UA core: sessions, dialogs, REFER tracking and input hygiene over the transaction layer.

Feed it datagrams or framed stream messages with :meth:`UserAgent.receive`,
drive time with :meth:`handle_timer`, act with :meth:`invite`, :meth:`answer`,
:meth:`bye`, :meth:`refer` ..., and drain :meth:`pop_transmissions` and
:meth:`pop_events`. Nothing here touches a socket or a clock.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from warmline.sip.access import (
    AccessMode,
    RateLimit,
    SourceLimiter,
    in_networks,
    parse_networks,
)
from warmline.sip.admission import CallAdmission
from warmline.sip.auth import Credentials, DigestClient, DigestServer
from warmline.sip.dialog import TARGET_REFRESH, Dialog, DialogState, target_for_uri
from warmline.sip.dialog_memo import DialogMemo
from warmline.sip.errors import SipParseError
from warmline.sip.events import (
    RequestReceived,
    ResponseReceived,
    Target,
    TransactionEvent,
    TransactionTimeout,
    Transmit,
)
from warmline.sip.headers import (
    NameAddr,
    Replaces,
    Via,
    parse_name_addr,
    parse_subscription_state,
)
from warmline.sip.ids import IdSource
from warmline.sip.message import (
    DEFAULT_MAX_SIZE,
    Request,
    Response,
    check_dialog_fields,
    parse_message,
    parse_sipfrag_status,
    validate_request,
    validate_response,
)
from warmline.sip.registration import Next, Registration
from warmline.sip.reliable import (
    RAck,
    rack_of,
    reliable_rseq,
    supports_reliable,
    wants_reliable,
)
from warmline.sip.responses import error_reply, make_response, salvage_headers
from warmline.sip.scheduler import Scheduler, TimerHandle
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
    ReferNotify,
    ReferResponse,
    ReferSubscription,
    RegistrationChanged,
    RememberedDialogEnded,
    RequestInDialog,
    Session,
    SessionEvent,
    SessionState,
)
from warmline.sip.session_timer import (
    Agreement,
    Refresher,
    SessionTimerSettings,
    TooBrief,
    as_uac,
    as_uas,
    min_se_of,
    request_headers,
)
from warmline.sip.timers import TimerSettings
from warmline.sip.transaction import (
    ClientTransaction,
    InviteClientTransaction,
    InviteServerTransaction,
    ServerTransaction,
)
from warmline.sip.transaction_layer import TransactionLayer, response_target, server_key
from warmline.sip.uri import SipUri, TelUri, is_digits, parse_uri

ALLOWED_METHODS = ("INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "REFER", "NOTIFY", "INFO", "UPDATE",
                   "PRACK")
KNOWN_UNSUPPORTED = frozenset({"REGISTER", "SUBSCRIBE", "MESSAGE", "PUBLISH"})
SUPPORTED_OPTIONS = ("replaces", "norefersub", "timer", "100rel")
_ALLOW = ", ".join(ALLOWED_METHODS)
_SUPPORTED = ", ".join(SUPPORTED_OPTIONS)
_SDP = "application/sdp"


@dataclass
class UserAgentConfig:
    """What the UA core needs to know; the CLI and config file fill it in."""

    user_agent: str = "warmline/0.1"
    timers: TimerSettings = field(default_factory=TimerSettings)
    max_message_size: int = DEFAULT_MAX_SIZE
    trusted_networks: list[str] | None = None  # None: no network is trusted
    # what a listener that names no mode does with a new request from an untrusted
    # source; None: OPEN without trusted networks, else CHALLENGE with auth_users, else
    # TRUSTED (a library embedding the core is open; `serve` passes its own)
    access: AccessMode | None = None
    auth_realm: str = "warmline"
    auth_users: dict[str, str] = field(default_factory=dict)
    credentials: list[Credentials] = field(default_factory=list)
    # RFC 4028: every call refreshed (or ended) within this; interval 0: off
    session_timer: SessionTimerSettings = field(default_factory=SessionTimerSettings)
    source_limit: RateLimit = field(default_factory=RateLimit)  # untrusted sources only
    # server transactions held at once; past it new requests get 503 (0: no limit)
    max_transactions: int = 0
    retry_after: int = 5  # seconds, in every 503 we send when overloaded
    # seconds SIP input may wait unread before new calls are capped (admission.py): the
    # shell measures it; 0: never capped
    max_queue_delay: float = 0.0

    def __post_init__(self) -> None:
        parse_networks(self.trusted_networks or [], "trusted_networks")
        if self.default_access is AccessMode.CHALLENGE and not self.auth_users:
            raise ValueError("access: challenge needs at least one account to check answers")

    @property
    def default_access(self) -> AccessMode:
        if self.access is not None:
            return self.access
        if self.trusted_networks is None:
            return AccessMode.OPEN
        return AccessMode.CHALLENGE if self.auth_users else AccessMode.TRUSTED


@dataclass
class Counters:
    received: int = 0
    sent: int = 0
    garbage_dropped: int = 0
    bad_requests: int = 0
    bad_responses_dropped: int = 0
    stray_responses: int = 0
    failovers: int = 0  # INVITEs sent on to the next resolved target (RFC 3263 §4.3)
    refused_untrusted: int = 0  # 403 to a source outside the trusted networks
    challenged: int = 0  # 401 sent to an untrusted source (first try or a wrong answer)
    rate_limited: int = 0  # messages dropped unread: their source was over its rate
    overloaded: int = 0  # 503 because the transaction table was full
    refused_draining: int = 0  # 503 to a new call or OPTIONS probe while draining
    refused_backlogged: int = 0  # the same while the node is behind on its SIP input


@dataclass
class _Pending:
    session: Session | None
    kind: str  # invite, reinvite, bye, cancel, refer, request, probe, register, fork-bye
    refer: ReferSubscription | None = None
    auth_attempts: int = 0
    probe: Probe | None = None
    registration: Registration | None = None
    memo: DialogMemo | None = None  # a BYE for a dialog a crashed run left up


class UserAgent:
    """A SIP user agent core (RFC 3261 §8, §12-§15, RFC 3515) without I/O."""

    def __init__(
        self,
        config: UserAgentConfig | None = None,
        *,
        new_id: Callable[[], str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or UserAgentConfig()
        self.layer = TransactionLayer(self.config.timers)
        self.scheduler = Scheduler()
        self.counters = Counters()
        self._new_id = new_id or IdSource()
        self._rng = rng or random.Random()
        self._listeners: dict[str, tuple[str, int]] = {}
        self._contacts: dict[tuple[str, str], NameAddr] = {}
        self._events: list[SessionEvent] = []
        self._sessions: dict[tuple[str, str], Session] = {}  # (call-id, local tag)
        self._pending: dict[ClientTransaction, _Pending] = {}
        self._refers: dict[tuple[str, str, int], ReferSubscription] = {}
        self._notify_only: dict[tuple[str, str], Session] = {}  # ended, a REFER still open
        self._trusted = parse_networks(self.config.trusted_networks or [])
        self._trust_cache: dict[str, bool] = {}
        self._limiter = SourceLimiter(self.config.source_limit)
        self._digest_server = (DigestServer(self.config.auth_realm, self.config.auth_users)
                               if self.config.auth_users else None)
        self._digest_client = DigestClient(list(self.config.credentials))
        self._trunk_digests: dict[Credentials, DigestClient] = {}
        self._registrations: dict[Registration, tuple[Target, TimerHandle | None]] = {}
        # draining: new calls and OPTIONS probes get 503 (a proxy in front fails over and
        # its ds_ping marks us inactive); live dialogs, their transfers and in-dialog
        # requests go on. Set by the node's Drain (calls/drain.py).
        self.draining = False
        # at the node's max_calls: OPTIONS probes outside a dialog get 503 too, so a proxy's
        # ds_ping keeps us out of rotation until a call ends (set by the switchboard)
        self.full = False
        # behind on its SIP input (the shell times its UDP queue, transport/backlog.py): new
        # calls past a cap and every OPTIONS probe get 503, until it has caught up
        self.admission = CallAdmission(self.config.max_queue_delay)

    # ------------------------------------------------------------------ set-up
    def add_listener(self, transport: str, host: str, port: int) -> None:
        """Tell the core an address it is reachable at (used in Via and Contact)."""
        self._listeners.setdefault(transport.lower(), (host, port))
        self._contacts.clear()

    def local_address(self, transport: str) -> tuple[str, int]:
        try:
            return self._listeners[transport]
        except KeyError:
            if not self._listeners:
                raise RuntimeError("no SIP listener registered with the UA core") from None
            return next(iter(self._listeners.values()))

    def contact_for(self, transport: str, user: str = "warmline") -> NameAddr:
        key = (transport, user)
        contact = self._contacts.get(key)
        if contact is None:
            contact = self._contacts[key] = self._build_contact(transport, user)
        return contact

    def _build_contact(self, transport: str, user: str) -> NameAddr:
        host, port = self.local_address(transport)
        host = f"[{host}]" if ":" in host else host
        params = () if transport == "udp" else (("transport", transport),)
        scheme = "sips" if transport == "tls" else "sip"
        return NameAddr(SipUri(host=host, user=user, port=port, params=params, scheme=scheme))

    # ------------------------------------------------------------------ driving
    def receive(self, data: bytes, source: Target, now: float,
                access: AccessMode | None = None) -> None:
        """Process one datagram or one framed stream message.

        ``access`` is the mode of the listener it came in on (None: the config's).
        """
        self.counters.received += 1
        if self._limiter.limit.enabled and not self.is_trusted(source.host) \
                and not self._limiter.allow(source.host, now):
            self.counters.rate_limited += 1
            return
        try:
            message = parse_message(data, max_size=self.config.max_message_size)
        except SipParseError as error:
            self.reject_unparsable(data, source, error)
            return
        if isinstance(message, Response):
            self._receive_response(message, now)
        else:
            self._receive_request(message, source, now, access or self.config.default_access)

    def transport_error(self, target: Target, now: float) -> None:
        """A connection to ``target`` failed: its client transactions fail now (§8.1.3.1)."""
        self._dispatch(self.layer.transport_error(target, now), now)

    def handle_timer(self, now: float) -> None:
        self._dispatch(self.layer.handle_timer(now), now)
        self.scheduler.run_due(now)

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (self.layer.next_deadline(), self.scheduler.next_deadline())
                     if d is not None]
        return min(deadlines) if deadlines else None

    def pop_transmissions(self) -> list[Transmit]:
        out = self.layer.pop_transmissions()
        self.counters.sent += len(out)
        return out

    def pop_events(self) -> list[SessionEvent]:
        out, self._events = self._events, []
        return out

    @property
    def sessions(self) -> list[Session]:
        return list(self._sessions.values())

    # ------------------------------------------------------------------ outbound calls
    def invite(
        self,
        to: str | SipUri,
        now: float,
        *,
        from_: NameAddr | str | None = None,
        sdp: bytes | None = None,
        headers: list[tuple[str, str]] | None = None,
        target: Target | None = None,
        targets: Sequence[Target] = (),
        credentials: Credentials | None = None,
    ) -> Session:
        """Start an outbound call.

        ``targets`` are where to send the INVITE, in order (RFC 3263: the resolver's
        list); on a transport error, a timeout or a 503 before any other answer the
        next one gets the same request as a new transaction (§4.3). ``target`` is
        one fixed destination; with neither, the URI's literal host and port.
        ``credentials`` answer this call's challenges (a trunk's account).
        """
        uri = _request_uri(to)
        targets = list(targets) or [target or target_for_uri(uri)]
        target = targets[0]
        local_tag = self._new_id()
        if from_ is None:
            caller = NameAddr(self.contact_for("udp").sip_uri.replace(
                scheme="sip", params=()))
        else:
            caller = parse_name_addr(from_) if isinstance(from_, str) else from_
        extra = [("Content-Type", _SDP)] if sdp else []
        request = Request("INVITE", uri, [
            ("Max-Forwards", "70"),
            ("From", str(caller.with_tag(local_tag))),
            ("To", str(NameAddr(uri))),
            ("Call-ID", f"{self._new_id()}{self._new_id()}"),
            ("CSeq", "1 INVITE"),
            ("Contact", str(self.contact_for(target.transport))),
            ("Allow", _ALLOW),
            ("Supported", _SUPPORTED),
            ("User-Agent", self.config.user_agent),
            *_unless_given(request_headers(self.config.session_timer), headers),
            *extra,
            *(headers or []),
        ], sdp or b"")
        session = Session(self._new_id(), False, request, SessionState.CALLING, local_tag,
                          target=target, local_sdp=sdp, fallback_targets=targets[1:],
                          credentials=credentials)
        self._sessions[(request.call_id, local_tag)] = session
        self._send_invite(session, request, now)
        return session

    def probe(self, to: str | SipUri, now: float, target: Target | None = None,
              credentials: Credentials | None = None,
              headers: list[tuple[str, str]] | None = None) -> Probe:
        """Send OPTIONS outside any dialog; a :class:`ProbeResult` reports the answer.

        A 401/407 is answered once with ``credentials`` (or the UA's own).
        """
        uri = _request_uri(to)
        target = target or target_for_uri(uri)
        caller = NameAddr(self.contact_for(target.transport).sip_uri.replace(
            scheme="sip", params=()))
        request = Request("OPTIONS", uri, [
            ("Via", self._via(target.transport)),
            ("Max-Forwards", "70"),
            ("From", str(caller.with_tag(self._new_id()))),
            ("To", str(NameAddr(uri))),
            ("Call-ID", f"{self._new_id()}{self._new_id()}"),
            ("CSeq", "1 OPTIONS"),
            ("Accept", _SDP),
            ("User-Agent", self.config.user_agent),
            *(headers or []),  # a pre-loaded Route through an outbound proxy
        ])
        probe = Probe(str(uri), credentials=credentials)
        transaction = self.layer.send_request(request, target, now)
        self._pending[transaction] = _Pending(None, "probe", probe=probe)
        return probe

    # ------------------------------------------------------------------ registration
    def register(self, registrar: str | SipUri, aor: str | SipUri, now: float, *,
                 name: str = "", expires: int = 600, target: Target | None = None,
                 credentials: Credentials | None = None,
                 headers: list[tuple[str, str]] | None = None) -> Registration:
        """Bind our Contact for ``aor`` at ``registrar`` and keep it bound (refresh, back-off).

        Every change of state is a :class:`RegistrationChanged` event.
        """
        registrar_uri, aor_uri = _request_uri(registrar), _request_uri(aor)
        target = target or target_for_uri(registrar_uri)
        registration = Registration(
            name or str(aor_uri), registrar_uri, aor_uri,
            self.contact_for(target.transport, aor_uri.user or "warmline"),
            f"{self._new_id()}{self._new_id()}", self._new_id(), expires=expires,
            credentials=credentials, headers=list(headers or []), _rng=self._rng)
        self._registrations[registration] = (target, None)
        self._send_register(registration, now)
        return registration

    def unregister(self, registration: Registration, now: float) -> None:
        """Remove the binding (Expires: 0); no more refreshes."""
        if registration not in self._registrations:
            return
        registration.unregistering = True
        self._send_register(registration, now)

    @property
    def registrations(self) -> list[Registration]:
        return list(self._registrations)

    def _send_register(self, registration: Registration, now: float) -> None:
        target, timer = self._registrations[registration]
        if timer is not None:
            timer.cancel()
        self._registrations[registration] = (target, None)
        request = registration.request()
        challenge = registration.challenge
        if challenge is not None and (answer := self._answer_challenge(
                challenge, request, registration.credentials)) is not None:
            header = "authorization" if challenge.status == 401 else "proxy-authorization"
            request.set(header, answer)
        request.add("Via", self._via(target.transport), first=True)
        request.add("User-Agent", self.config.user_agent)
        transaction = self.layer.send_request(request, target, now)
        self._pending[transaction] = _Pending(None, "register", registration=registration)
        self._events.append(RegistrationChanged(registration))

    def _registration_answered(self, registration: Registration, step: Next,
                               now: float) -> None:
        self._events.append(RegistrationChanged(registration))
        if step is Next.DONE:
            self._registrations.pop(registration, None)
            return
        if step is Next.RETRY_NOW:
            self._send_register(registration, now)
            return
        when = registration.refresh_at if step is Next.REFRESH else registration.retry_at
        target, _ = self._registrations[registration]
        timer = self.scheduler.call_at(when or now, lambda at: self._send_register(
            registration, at))
        self._registrations[registration] = (target, timer)

    def _answer_challenge(self, challenge: Response, request: Request,
                          credentials: Credentials | None) -> str | None:
        """The Authorization (or Proxy-) value for ``request`` answering ``challenge``."""
        header = "www-authenticate" if challenge.status == 401 else "proxy-authenticate"
        text = challenge.get(header)
        if text is None:
            return None
        try:
            return self._digest_for(credentials).authorization(text, request.method,
                                                               str(request.uri))
        except SipParseError:
            return None

    def _digest_for(self, credentials: Credentials | None) -> DigestClient:
        """The trunk's own digest client (its nonce counts), or the UA's."""
        if credentials is None:
            return self._digest_client
        client = self._trunk_digests.get(credentials)
        if client is None:
            client = self._trunk_digests[credentials] = DigestClient([credentials])
        return client

    def cancel(self, session: Session, now: float, reason: str | None = None) -> None:
        """CANCEL an outbound call; sent once a provisional arrived (RFC 3261 §9.1).
        ``reason``: a Reason header (RFC 3326), e.g. ``SIP;cause=200;text="Call completed
        elsewhere"`` so the phones of a group that lost the race do not log a missed call."""
        transaction = session.client_transaction
        if session.inbound or session.state is not SessionState.CALLING or transaction is None:
            return
        session.cancel_requested = True
        session.cancel_reason = reason
        session.state = SessionState.TERMINATING
        if transaction.last_response is not None:
            self._send_cancel(session, transaction, now)
            session.cancel_sent = True

    # ------------------------------------------------------------------ inbound calls
    def ring(self, session: Session, now: float, status: int = 180,
             sdp: bytes | None = None) -> None:
        """A provisional response; with ``sdp`` (a 183) it carries our answer: early media.

        The answer goes reliably when the caller supports 100rel (RFC 3262), and
        the 2xx that follows waits for its PRACK (§3); :meth:`answer` then repeats
        the same SDP, as RFC 6337 §3.1.1 asks.
        """
        self._provisional(session, status, now, sdp)

    def answer(
        self, session: Session, sdp: bytes, now: float,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        """Send 2xx with an SDP answer; retransmitted until the ACK (RFC 3261 §13.3.1.4).

        After a reliable 183 with SDP that is not yet PRACKed the 2xx is held and
        sent when the PRACK comes (RFC 3262 §3), or never if it does not.
        """
        transaction = self._incoming(session)
        if session.unacked_rseq is not None and session.unacked_has_sdp:
            session.deferred_answer = (sdp, list(headers or []))
            return
        request = session.invite
        user = request.uri.user if isinstance(request.uri, SipUri) else None
        contact = self.contact_for(_transport_of(session), user or "warmline")
        dialog = Dialog.from_uas_request(request, session.local_tag, contact)
        dialog.state = DialogState.CONFIRMED
        session.dialog = dialog
        session.local_sdp = sdp
        session.peer_methods = _methods(request)
        agreement, timer_headers = self._timer_as_uas(request)
        response = make_response(request, 200, to_tag=session.local_tag, headers=[
            *_record_route(request), ("Contact", str(contact)), ("Allow", _ALLOW),
            ("Supported", _SUPPORTED), *timer_headers, ("Content-Type", _SDP),
            *(headers or []),
        ], body=sdp)
        self._stop_retransmit(session)  # a reliable 1xx still unacknowledged: over now
        session.unacked_rseq = None
        session.deferred_answer = None
        session.state = SessionState.ANSWERED
        self._arm_session_timer(session, agreement, now)
        self.layer.respond(transaction, response, now)
        self._retransmit_2xx(session, transaction.target, transaction.hand_over_2xx(), now)
        replaced, session.replaced = session.replaced, None
        if replaced is not None and not replaced.ended:  # RFC 3891 §3: the old dialog ends
            replaced.end_reason = "replaced (RFC 3891)"
            self.bye(replaced, now)

    def reject(self, session: Session, status: int, now: float, reason: str | None = None,
               headers: list[tuple[str, str]] | None = None) -> None:
        transaction = self._incoming(session)
        response = make_response(session.invite, status, reason, to_tag=session.local_tag,
                                  headers=headers)
        self.layer.respond(transaction, response, now)
        self._end(session, "rejected", status, now=now)

    # ------------------------------------------------------------------ in dialog
    def bye(self, session: Session, now: float, reason: str | None = None) -> None:
        """Hang up a confirmed (or answered, not yet ACKed) call; ``reason`` is a Reason
        header value (RFC 3326) saying why, e.g. ``SIP;cause=408;text="no RTP"``."""
        if session.let_go:  # another node's dialog now: ending it here says nothing
            self.let_go(session, now, session.end_reason or "let go")
            return
        if session.state in (SessionState.CALLING,):
            self.cancel(session, now, reason)
            return
        if session.state is SessionState.INCOMING:  # not answered yet (early media)
            self.reject(session, 480, now)
            self._events.append(CallEnded(session, False, "local hangup"))
            return
        if session.dialog is None or session.state in (SessionState.TERMINATED,
                                                        SessionState.TERMINATING):
            return
        if session.state is SessionState.ANSWERED and session._retransmit is not None:
            session.hangup_after_ack = True  # RFC 3261 §15: no BYE before the ACK
            return
        self._stop_retransmit(session)
        session.state = SessionState.TERMINATING
        session.end_reason = session.end_reason or "local hangup"
        headers = [("Reason", reason)] if reason else []
        self._send_in_dialog(session, session.dialog.create_request("BYE", headers), "bye", now)

    def memo_of(self, session: Session) -> DialogMemo | None:
        """What a later run needs to end ``session``'s dialog (None: not confirmed)."""
        dialog = session.dialog
        if dialog is None or session.state is not SessionState.CONFIRMED:
            return None
        # the remote target (or the route set), not the connection it came over: that
        # connection dies with us, and the port it came from is nobody's listener
        target = target_for_uri(dialog.next_hop(), _transport_of(session))
        return DialogMemo.of(dialog, target)

    def end_remembered(self, memo: DialogMemo, now: float, reason: str) -> None:
        """BYE a dialog an earlier run owned (sip/dialog_memo.py); its answer, or 408 when
        none comes, is a RememberedDialogEnded event. SipParseError for a broken memo."""
        request = memo.dialog().create_request("BYE", [("Reason", reason)])
        target = memo.target
        request.add("Via", self._via(target.transport), first=True)
        transaction = self.layer.send_request(request, target, now)
        self._pending[transaction] = _Pending(None, "remembered-bye", memo=memo)

    def adopt(self, memo: DialogMemo, inbound: bool) -> Session:
        """Take over a confirmed dialog another node owned (its memo, read from the cluster):
        a CONFIRMED session whose Contact is ours, its CSeq past anything sent before.

        Nothing is sent: the caller re-INVITEs it (:meth:`reinvite`) so that the far end's
        next requests come here (a re-INVITE refreshes the remote target, RFC 3261
        §12.2.2, and our Contact in it refreshes theirs of us). ``inbound``: the far
        end called (its From is the remote party). SipParseError for a broken memo;
        ValueError when this UA already holds the dialog.
        """
        dialog = memo.dialog()
        key = (memo.call_id, memo.local_tag)
        if key in self._sessions:
            raise ValueError(f"dialog {memo.key} is already held here")
        dialog.local_contact = self.contact_for(memo.transport)
        dialog.is_uac = not inbound
        remote = dialog.remote_address
        local = dialog.local_address
        caller, callee = (remote, local) if inbound else (local, remote)
        invite = Request("INVITE", dialog.remote_target, [
            ("From", str(caller)), ("To", str(callee)), ("Call-ID", memo.call_id),
            ("CSeq", "1 INVITE")])
        session = Session(self._new_id(), inbound, invite, SessionState.CONFIRMED,
                          memo.local_tag, dialog=dialog, target=memo.target)
        self._sessions[key] = session
        return session

    def let_go(self, session: Session, now: float, reason: str) -> None:
        """Forget a dialog another node has taken over, sending nothing: a BYE or a refresh
        from here would end or fight the call it now serves. A CallEnded event with
        ``reason`` tells the application (locally: the far end saw nothing)."""
        session.let_go = True
        if session.ended:
            return
        self._end(session, reason, now=now)
        self._events.append(CallEnded(session, False, reason))

    def reinvite(self, session: Session, sdp: bytes, now: float) -> None:
        """Renegotiate media; a 491 is retried after the RFC 3261 §14.1 back-off.

        It refreshes the session timer too (RFC 4028 §7.4).
        """
        dialog = self._confirmed_dialog(session)
        if session._reinvite_pending:
            raise RuntimeError("a re-INVITE is already pending on this session")
        session._reinvite_pending = True
        session.local_sdp = sdp
        request = dialog.create_request("INVITE", [
            ("Content-Type", _SDP), ("Supported", _SUPPORTED),
            *self._refresh_headers(session)], sdp)
        self._send_in_dialog(session, request, "reinvite", now)

    def refer(
        self, session: Session, refer_to: NameAddr | str, now: float, *,
        referred_by: NameAddr | str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> ReferSubscription:
        """Send REFER in the dialog and track its implicit subscription (RFC 3515)."""
        dialog = self._confirmed_dialog(session)
        target = parse_name_addr(refer_to) if isinstance(refer_to, str) else refer_to
        extra = [("Refer-To", str(target))]
        if referred_by is not None:
            extra.append(("Referred-By", str(referred_by)))
        request = dialog.create_request("REFER", extra + (headers or []))
        refer = ReferSubscription(session, request, target)
        self._refers[(session.call_id, session.local_tag, request.cseq.seq)] = refer
        self._send_in_dialog(session, request, "refer", now, refer=refer)
        return refer

    def request(self, session: Session, method: str, now: float,
                headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> None:
        """Send any other in-dialog request (INFO, NOTIFY, UPDATE, OPTIONS)."""
        dialog = self._confirmed_dialog(session)
        self._send_in_dialog(session, dialog.create_request(method, headers, body), "request", now)

    def respond(self, transaction: object, status: int, now: float, *,
                session: Session | None = None, reason: str | None = None,
                headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> None:
        """Answer a request handed over in :class:`RequestInDialog`."""
        if not isinstance(transaction, ServerTransaction):
            raise TypeError("respond() needs the transaction from a RequestInDialog event")
        tag = session.local_tag if session else None
        extra = list(headers or [])
        request = transaction.request
        if session is not None and 200 <= status < 300 and request.method in ("INVITE",
                                                                             "UPDATE"):
            agreement, timer_headers = self._timer_as_uas(request)
            extra += timer_headers
            self._arm_session_timer(session, agreement, now)  # a refresh from the far end
        response = make_response(request, status, reason, to_tag=tag, headers=extra,
                                 body=body)
        if isinstance(transaction, InviteServerTransaction) and session is not None:
            self._answer_reinvite(session, transaction, response, now)
            return
        self.layer.respond(transaction, response, now)

    # ------------------------------------------------------------------ 100rel (RFC 3262)
    def _prack_if_reliable(self, session: Session, transaction: ClientTransaction,
                           response: Response, now: float) -> bool:
        """PRACK a reliable 1xx in its early dialog; True when it was a retransmission."""
        rseq = reliable_rseq(response)
        tag = response.to.tag or ""
        early = session.early_dialogs.get(tag)
        if rseq is None or early is None:
            return False
        last = session.rseqs.get(tag)
        if last is not None and rseq <= last:
            return True  # our PRACK's own transaction retransmits if it was lost (§4)
        session.rseqs[tag] = rseq
        rack = RAck(rseq, response.cseq.seq, response.cseq.method)
        prack = early.create_request("PRACK", [("RAck", str(rack))])
        target = self._target_of(session, early)
        prack.add("Via", self._via(target.transport), first=True)
        self._pending[self.layer.send_request(prack, target, now)] = _Pending(session, "prack")
        return False

    def _on_prack(self, request: Request, transaction: ServerTransaction, now: float) -> None:
        """A PRACK for our reliable 1xx: stop retransmitting it, answer 200 (§3)."""
        session = self._sessions.get((request.call_id, request.to.tag or ""))
        try:
            rack = rack_of(request)
        except SipParseError as error:
            self.layer.respond(transaction, make_response(request, 400, error.reason), now)
            return
        if session is None or not session.inbound or rack.rseq != session.unacked_rseq or \
                rack.cseq != session.invite.cseq.seq:
            self.layer.respond(transaction, make_response(request, 481), now)
            return
        session.unacked_rseq = None
        if session.state is SessionState.INCOMING:
            self._stop_retransmit(session)
        self.layer.respond(transaction, make_response(request, 200), now)
        deferred, session.deferred_answer = session.deferred_answer, None
        if deferred is not None and session.state is SessionState.INCOMING:
            self.answer(session, deferred[0], now, deferred[1])

    # ------------------------------------------------------------------ session timers
    def _timer_as_uas(self, request: Request) -> tuple[Agreement | None, list[tuple[str, str]]]:
        """Our side of RFC 4028 for a 2xx to ``request`` (checked by _timer_refusal before)."""
        try:
            return as_uas(request, self.config.session_timer)
        except (TooBrief, SipParseError):
            return None, []

    def _timer_refusal(self, request: Request, to_tag: str | None = None) -> Response | None:
        """422 with our Min-SE for a Session-Expires below it, 400 for a malformed one."""
        try:
            as_uas(request, self.config.session_timer)
        except TooBrief as brief:
            return make_response(request, 422, to_tag=to_tag,
                                 headers=[("Min-SE", str(brief.min_se))])
        except SipParseError as error:
            return make_response(request, 400, error.reason, to_tag=to_tag)
        return None

    def _refresh_headers(self, session: Session) -> list[tuple[str, str]]:
        """Session-Expires for a re-INVITE or UPDATE of ours: it refreshes the timer too."""
        timer = session.timer
        if timer is None:
            return request_headers(self.config.session_timer)
        return request_headers(self.config.session_timer, timer.interval,
                               Refresher.UAC if timer.we_refresh else None)

    def _arm_session_timer(self, session: Session, agreement: Agreement | None,
                           now: float) -> None:
        """(Re)start the timer after a 2xx that set or refreshed it; None: no timer."""
        self._disarm_session_timer(session)
        session.timer = agreement
        if agreement is None:
            return
        delay = agreement.refresh_after() if agreement.we_refresh else agreement.expire_after()
        session._timer_handle = self.scheduler.call_at(now + delay,
                                                       _SessionTimerFire(self, session).fire)

    def _disarm_session_timer(self, session: Session) -> None:
        handle, session._timer_handle = session._timer_handle, None
        if handle is not None:
            handle.cancel()

    def _session_timer_fired(self, session: Session, now: float) -> None:
        timer = session.timer
        if timer is None or session.state is not SessionState.CONFIRMED:
            return
        if not timer.we_refresh:  # no refresh came in time: the far end is gone (§10)
            session.end_reason = "session timer expired"
            self.bye(session, now)
            return
        if session._reinvite_pending:
            return  # a re-INVITE on its way refreshes the session itself
        dialog = session.dialog
        if "UPDATE" in session.peer_methods and dialog is not None:
            update = dialog.create_request("UPDATE", [("Supported", _SUPPORTED),
                                                      *self._refresh_headers(session)])
            self._send_in_dialog(session, update, "refresh", now)
        else:
            self.reinvite(session, session.local_sdp or b"", now)

    def _refresh_answered(self, session: Session, transaction: ClientTransaction,
                          response: Response, now: float) -> None:
        """The final answer to an UPDATE that refreshed the session."""
        if response.is_success:
            self._arm_session_timer(session, as_uac(response), now)
        elif response.status in (408, 481):
            self._session_gone(session, response.status, now)
        elif response.status == 422 and session.timer is not None:
            longer = min_se_of(response)
            session.timer = Agreement(max(longer, session.timer.interval), True)
            self._session_timer_fired(session, now)

    def _session_gone(self, session: Session, status: int, now: float) -> None:
        """A refresh answered 408 or 481 (or unanswered): the session is over (§10)."""
        session.end_reason = f"session refresh failed ({status})"
        if status == 481:
            self._end(session, session.end_reason, now=now)
            self._events.append(CallEnded(session, False, session.end_reason))
            return
        self.bye(session, now)

    def _retry_longer(self, session: Session, transaction: ClientTransaction,
                      response: Response, now: float) -> bool:
        """422 to our INVITE: once more with the interval the far end asks for (§7.3)."""
        if session.timer_retries >= 1 or not self.config.session_timer.enabled:
            return False
        old = transaction.request
        interval = min_se_of(response)
        retry = Request(old.method, old.uri, [(n, v) for n, v in old.headers if n != "via"],
                        old.body)
        retry.set("CSeq", f"{old.cseq.seq + 1} {old.method}")
        retry.set("Session-Expires", str(interval))
        retry.set("Min-SE", str(interval))
        session.timer_retries += 1
        session.invite = retry
        self._send_invite(session, retry, now)
        return True

    # ================================================================== internals
    def _incoming(self, session: Session) -> InviteServerTransaction:
        transaction = session.server_transaction
        if not session.inbound or session.state is not SessionState.INCOMING or transaction is None:
            raise RuntimeError(f"session {session.id} is not an unanswered inbound call")
        return transaction

    def _confirmed_dialog(self, session: Session) -> Dialog:
        if session.dialog is None or session.state not in (SessionState.CONFIRMED,
                                                           SessionState.ANSWERED):
            raise RuntimeError(f"session {session.id} has no confirmed dialog")
        return session.dialog

    def _provisional(self, session: Session, status: int, now: float,
                     sdp: bytes | None = None) -> None:
        """A 1xx; reliable (RFC 3262) when the caller requires 100rel, or supports it and
        the 1xx carries our answer; one reliable 1xx at a time."""
        transaction = self._incoming(session)
        contact = self.contact_for(_transport_of(session))
        invite = session.invite
        reliable = wants_reliable(invite) or (sdp is not None and supports_reliable(invite))
        if reliable and session.unacked_rseq is not None:
            return  # §3: no second reliable 1xx before the first is PRACKed
        headers = [*_record_route(invite), ("Contact", str(contact))]
        if reliable:
            session.rseq = session.rseq + 1 if session.rseq else self._rng.randint(1, 2**30)
            session.unacked_rseq = session.rseq
            session.unacked_has_sdp = sdp is not None
            headers += [("Require", "100rel"), ("RSeq", str(session.rseq))]
        if sdp is not None:
            session.local_sdp = sdp
            headers += [("Allow", _ALLOW), ("Supported", _SUPPORTED), ("Content-Type", _SDP)]
        response = make_response(invite, status, to_tag=session.local_tag, headers=headers,
                                 body=sdp or b"")
        self.layer.respond(transaction, response, now)
        if reliable:
            resend = _ReliableProvisional(self, session, transaction.target,
                                          transaction.wire or b"", now + self.config.timers.timeout)
            session._retransmit = self.scheduler.call_at(now + self.config.timers.t1,
                                                         resend.fire)

    def _via(self, transport: str) -> str:
        host, port = self.local_address(transport)
        host = f"[{host}]" if ":" in host else host
        return f"SIP/2.0/{transport.upper()} {host}:{port};branch=z9hG4bK{self._new_id()};rport"

    def _send_invite(self, session: Session, request: Request, now: float) -> None:
        assert session.target is not None
        request.add("Via", self._via(session.target.transport), first=True)
        transaction = self.layer.send_request(request, session.target, now)
        session.client_transaction = transaction
        self._pending[transaction] = _Pending(session, "invite")

    def _send_cancel(self, session: Session, invite_tx: ClientTransaction, now: float) -> None:
        invite = invite_tx.request
        cancel = Request("CANCEL", invite.uri, [
            ("Via", str(invite.top_via)),
            *[("Route", value) for value in invite.values("route")],
            ("Max-Forwards", "70"),
            ("From", invite.get("from") or ""),
            ("To", invite.get("to") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.seq} CANCEL"),
            *([("Reason", session.cancel_reason)] if session.cancel_reason else []),
        ])
        transaction = self.layer.send_request(cancel, invite_tx.target, now)
        self._pending[transaction] = _Pending(session, "cancel")
        if isinstance(invite_tx, InviteClientTransaction):
            self.layer.guard_cancel(invite_tx, now)

    def _target_of(self, session: Session, dialog: Dialog) -> Target:
        if session.flow is not None:
            return session.flow
        return target_for_uri(dialog.next_hop(), _transport_of(session))

    def _send_in_dialog(self, session: Session, request: Request, kind: str, now: float,
                        refer: ReferSubscription | None = None, auth_attempts: int = 0) -> None:
        assert session.dialog is not None
        if session.let_go:
            return  # another node serves the dialog: a request from here would fight it
        if _waits_for_ack(session, request):
            session.held_requests.append((request, kind, refer))  # sent when the ACK comes
            return
        target = self._target_of(session, session.dialog)
        request.add("Via", self._via(target.transport), first=True)
        transaction = self.layer.send_request(request, target, now)
        self._pending[transaction] = _Pending(session, kind, refer, auth_attempts)

    def _send_ack(self, session: Session, invite: Request, now: float) -> None:
        assert session.dialog is not None
        ack = session.dialog.ack_for(invite)
        target = self._target_of(session, session.dialog)
        ack.add("Via", self._via(target.transport), first=True)
        session._ack_wire, session._ack_target = ack.to_bytes(), target
        self.layer.send_raw(target, session._ack_wire)

    def _retransmit_2xx(self, session: Session, target: Target, wire: bytes, now: float,
                        cseq: int | None = None) -> None:
        """``cseq``: the re-INVITE's, for a 2xx to a re-INVITE; None for the initial INVITE."""
        timers = self.config.timers
        retransmitter = _TwoXXRetransmitter(self, session, target, wire, now + timers.timeout,
                                            cseq)
        first = now + (timers.t1 if not target.reliable else timers.timeout)
        session._retransmit = self.scheduler.call_at(first, retransmitter.fire)

    def _stop_retransmit(self, session: Session) -> None:
        if session._retransmit is not None:
            session._retransmit.cancel()
            session._retransmit = None

    def _end(self, session: Session, reason: str, status: int | None = None, *,
             now: float) -> None:
        self._stop_retransmit(session)
        self._disarm_session_timer(session)
        session.state = SessionState.TERMINATED
        session.end_reason = session.end_reason or reason
        session.end_status = status
        key = (session.call_id, session.local_tag)
        self._sessions.pop(key, None)
        open_refers = [k for k, r in self._refers.items() if r.session is session and not r.done]
        for refer_key in [k for k, r in self._refers.items() if r.session is session]:
            if refer_key not in open_refers:
                del self._refers[refer_key]
        if open_refers and session.dialog is not None:
            self._keep_for_notify(session, open_refers, now)

    def _keep_for_notify(self, session: Session, refer_keys: list[tuple[str, str, int]],
                         now: float) -> None:
        """The INVITE usage ended, but a REFER subscription outlives it (RFC 5057 §5.2,
        RFC 6665 §4.5): its final NOTIFY may still come (a transferee often hangs up the
        old call before reporting), so the dialog stays for NOTIFY alone, for 64*T1."""
        key = (session.call_id, session.local_tag)
        self._notify_only[key] = session
        give_up = self.config.timers.t1 * 64

        def forget(_: float) -> None:
            self._notify_only.pop(key, None)
            for refer_key in refer_keys:
                self._refers.pop(refer_key, None)

        self.scheduler.call_at(now + give_up, forget)

    # ------------------------------------------------------------------ receiving
    def reject_unparsable(self, data: bytes, source: Target, error: SipParseError) -> None:
        """Answer 400/513 to a request that could not be framed, if it can be answered."""
        headers = salvage_headers(data)
        if headers is None or data.lstrip().startswith(b"ACK "):
            self.counters.garbage_dropped += 1
            return
        self.counters.bad_requests += 1
        self._stateless(error_reply(headers, error), source)

    def _stateless(self, response: Response, source: Target) -> None:
        try:
            target = response_target(response, source)
        except SipParseError:
            target = source
        self.layer.send_raw(target, response.to_bytes())

    def _receive_request(self, request: Request, source: Target, now: float,
                         access: AccessMode) -> None:
        try:
            validate_request(request)
        except SipParseError as error:
            self.counters.bad_requests += 1
            if request.method != "ACK":
                self._stateless(make_response(request, error.status, error.reason), source)
            return
        refusal = self._precheck(request, source, now, access) \
            or self._overload(request, source) or self._drain_refusal(request, now) \
            or self._full_refusal(request)
        if refusal is not None:
            if request.method != "ACK":
                self._stateless(refusal, source)
            return
        self._dispatch(self.layer.receive_request(request, source, now), now)

    def _precheck(self, request: Request, source: Target, now: float,
                  access: AccessMode) -> Response | None:
        """Stateless refusals: 501/405, 416, 420, 403/401 for untrusted sources."""
        method = request.method
        if method not in ALLOWED_METHODS:
            status = 405 if method in KNOWN_UNSUPPORTED else 501
            return make_response(request, status, headers=[("Allow", _ALLOW)])
        if not isinstance(request.uri, (SipUri, TelUri)):
            return make_response(request, 416)
        if method not in ("ACK", "CANCEL") and request.get("require") is not None:
            unsupported = [opt for opt in request.require if opt not in SUPPORTED_OPTIONS]
            if unsupported:
                return make_response(request, 420,
                                     headers=[("Unsupported", ", ".join(unsupported))])
        if method == "ACK":
            return None
        if method == "CANCEL" or request.to.tag is not None:
            return self._names_nothing_held(request, source, access)
        return self._authenticate(request, source, now, access)

    def _names_nothing_held(self, request: Request, source: Target,
                            access: AccessMode) -> Response | None:
        """481, statelessly, for an untrusted source's CANCEL or in-dialog request that
        names no transaction or dialog of ours: otherwise each would hold a server
        transaction for 32 s, and a stranger could fill the table with them."""
        if access is AccessMode.OPEN or self.is_trusted(source.host):
            return None
        if request.method == "CANCEL":
            held = self.layer.find_invite_server(request) is not None \
                or self.layer.answered_invite(request)
        else:
            held = self._knows_dialog(request) or self.layer.holds(request)
        if held:
            return None
        self.counters.refused_untrusted += 1
        return make_response(request, 481)

    def _knows_dialog(self, request: Request) -> bool:
        key = (request.call_id, request.to.tag or "")
        return key in self._sessions or key in self._notify_only

    def _authenticate(self, request: Request, source: Target, now: float,
                      access: AccessMode) -> Response | None:
        """None when ``source`` may start this request; else the 403 or 401 it gets.

        In-dialog requests never get here: they need a dialog that an admitted
        request created, and CANCEL and ACK only touch a transaction it opened.
        """
        if access is AccessMode.OPEN or self.is_trusted(source.host):
            return None
        if access is AccessMode.TRUSTED or self._digest_server is None:
            self.counters.refused_untrusted += 1
            return make_response(request, 403, "Forbidden (untrusted source)")
        answer = request.get("authorization")
        stale = False
        if answer is not None:
            accepted, stale = self._digest_server.verify(answer, request.method, now,
                                                         request.uri)
            if accepted:
                return None
        self.counters.challenged += 1
        challenge = self._digest_server.challenge(now, stale=stale)
        return make_response(request, 401, to_tag=self._new_id(),
                             headers=[("WWW-Authenticate", challenge)])

    def _overload(self, request: Request, source: Target) -> Response | None:
        """A 503 with Retry-After when the transaction table is full (never silence).

        Only a new request is refused: a retransmission, ACK or CANCEL belongs to a
        transaction we already hold, and a request in a live dialog (its BYE above
        all) must still end or change it. Untrusted sources get 90% of the table, so
        the trusted carrier always finds room. The table is bounded so a flood costs
        bounded memory; the per-source limit usually stops it earlier.
        """
        limit = self.config.max_transactions
        if not limit or request.method in ("ACK", "CANCEL"):
            return None
        room = limit if self.is_trusted(source.host) else limit * 9 // 10
        if self.layer.load < room or self.layer.holds(request) \
                or (request.to.tag is not None and self._knows_dialog(request)):
            return None
        self.counters.overloaded += 1
        return make_response(request, 503, "Service Unavailable (overloaded)",
                             headers=[("Retry-After", str(self.config.retry_after))])

    def _drain_refusal(self, request: Request, now: float) -> Response | None:
        """While draining, or past the cap on new calls while backlogged (admission.py),
        a 503 with Retry-After and a Reason for a new INVITE (not one with Replaces: that
        joins a live call, an attended transfer finishing) and its retransmissions; while
        draining or refusing INVITEs, for an OPTIONS probe outside a dialog. Stateless
        like the overload 503: a stateful proxy absorbs our retransmitted answers, and
        nothing is held for the refusal (backlogged, that is the point: a refusal costs a
        parse)."""
        if request.to.tag is not None or request.method not in ("INVITE", "OPTIONS"):
            return None
        if (request.method == "INVITE" and request.get("replaces") is not None) \
                or self.layer.holds(request):  # a retransmission of a call taken before
            return None
        if self.draining:
            self.counters.refused_draining += 1
            why = "draining"
        elif (request.method == "INVITE"
              and not self.admission.admit(now, server_key(request))) \
                or (request.method == "OPTIONS" and self.admission.refusing(now)):
            self.counters.refused_backlogged += 1
            why = "overloaded"
        else:
            return None
        return make_response(request, 503, f"Service Unavailable ({why})", headers=[
            ("Retry-After", str(self.config.retry_after)),
            ("Reason", f'SIP;cause=503;text="{why}"')])

    def _full_refusal(self, request: Request) -> Response | None:
        """At max_calls, an OPTIONS probe outside a dialog: 503 with Retry-After (new calls
        get theirs from the switchboard, which counts them)."""
        if not self.full or request.method != "OPTIONS" or request.to.tag is not None:
            return None
        return make_response(request, 503, "Service Unavailable (full)", headers=[
            ("Retry-After", str(self.config.retry_after)),
            ("Reason", 'SIP;cause=503;text="at max_calls"')])

    def trust(self, addresses: Sequence[str]) -> None:
        """Trust these addresses too (a trunk's resolved next hops, learnt at start)."""
        self._trusted = (*self._trusted, *parse_networks(addresses))
        self._trust_cache.clear()

    def is_trusted(self, host: str) -> bool:
        """Whether ``host`` is in the trusted networks (cached per address)."""
        trusted = self._trust_cache.get(host)
        if trusted is None:
            if len(self._trust_cache) > 4096:
                self._trust_cache.clear()
            trusted = self._trust_cache[host] = in_networks(host, self._trusted)
        return trusted

    def _receive_response(self, response: Response, now: float) -> None:
        try:
            validate_response(response)
        except SipParseError:
            self.counters.bad_responses_dropped += 1
            return
        self._dispatch(self.layer.receive_response(response, now), now)

    def _dispatch(self, events: list[TransactionEvent], now: float) -> None:
        for event in events:
            if isinstance(event, RequestReceived):
                self._on_request(event, now)
            elif isinstance(event, ResponseReceived):
                self._on_response(event.response, event.transaction, now)
            elif isinstance(event, TransactionTimeout):
                self._on_timeout(event.transaction, now, event.transport_error)

    # ------------------------------------------------------------------ requests
    def _on_request(self, event: RequestReceived, now: float) -> None:
        request, transaction = event.request, event.transaction
        if transaction is None:
            self._on_ack(request, now)
            return
        assert isinstance(transaction, ServerTransaction)
        if request.method == "CANCEL":
            self._on_cancel(request, transaction, now)
        elif request.method == "PRACK":
            self._on_prack(request, transaction, now)
        elif request.to.tag is not None:
            self._on_in_dialog(request, transaction, now)
        elif request.method == "INVITE":
            assert isinstance(transaction, InviteServerTransaction)
            self._on_new_invite(request, event.source, transaction, now)
        elif request.method == "OPTIONS":
            self.layer.respond(transaction, make_response(request, 200, to_tag=self._new_id(),
                               headers=[("Allow", _ALLOW), ("Accept", _SDP),
                                        ("Supported", _SUPPORTED)]), now)
        else:
            status = 403 if request.method == "REFER" else 481
            self.layer.respond(transaction, make_response(request, status,
                                                          to_tag=self._new_id()), now)

    def _on_new_invite(self, request: Request, source: Target,
                       transaction: InviteServerTransaction, now: float) -> None:
        local_tag = self._new_id()
        try:
            check_dialog_fields(request)
        except SipParseError as error:
            self.layer.respond(transaction, make_response(
                request, 400, error.reason, to_tag=local_tag), now)
            return
        if request.body and request.content_type != _SDP:
            self.layer.respond(transaction, make_response(
                request, 415, to_tag=local_tag, headers=[("Accept", _SDP)]), now)
            return
        refusal = self._timer_refusal(request, local_tag)
        if refusal is not None:
            self.layer.respond(transaction, refusal, now)
            return
        replaces, replaced = None, None
        if request.get("replaces") is not None:
            try:
                replaces = request.replaces
            except SipParseError as error:  # RFC 3891 §6.1 needs call-id, to-tag, from-tag
                self.layer.respond(transaction, make_response(
                    request, 400, f"Bad Replaces: {error.reason}", to_tag=local_tag), now)
                return
            replaced = self._find_replaced(replaces) if replaces is not None else None
            if replaced is None:
                self.layer.respond(transaction, make_response(request, 481, to_tag=local_tag),
                                   now)
                return
        session = Session(self._new_id(), True, request, SessionState.INCOMING, local_tag,
                          server_transaction=transaction, remote_sdp=request.body or None,
                          flow=source if source.reliable else None, replaces=replaces,
                          source=source, replaced=replaced)
        self._sessions[(request.call_id, local_tag)] = session
        self._events.append(IncomingCall(session))

    def _find_replaced(self, replaces: Replaces) -> Session | None:
        session = self._sessions.get((replaces.call_id, replaces.to_tag))
        if session is None or session.dialog is None:
            return None
        if session.dialog.remote_tag != replaces.from_tag:
            return None
        if replaces.early_only and session.state is SessionState.CONFIRMED:
            return None
        return session

    def _on_ack(self, ack: Request, now: float) -> None:
        session = self._sessions.get((ack.call_id, ack.to.tag or ""))
        if session is not None and session.state is SessionState.CONFIRMED:
            self._on_reinvite_ack(session, ack, now)
            return
        if session is None or session.state is not SessionState.ANSWERED:
            return
        self._stop_retransmit(session)
        session.state = SessionState.CONFIRMED
        if ack.body:
            session.remote_sdp = ack.body
        self._events.append(CallConfirmed(session))
        if session.hangup_after_ack:
            self.bye(session, now)
            return
        held, session.held_requests = session.held_requests, []
        for request, kind, refer in held:
            self._send_in_dialog(session, request, kind, now, refer=refer)

    def _on_cancel(self, cancel: Request, transaction: ServerTransaction, now: float) -> None:
        invite_tx = self.layer.find_invite_server(cancel)
        if invite_tx is None:
            if self.layer.answered_invite(cancel):  # too late: 200, and nothing changes
                tag = next((s.local_tag for s in self._sessions.values()
                            if s.inbound and s.call_id == cancel.call_id), None)
                self.layer.respond(transaction, make_response(cancel, 200, to_tag=tag), now)
                return
            self.layer.respond(transaction, make_response(cancel, 481), now)
            return
        session = self._session_for_server(invite_tx)
        self.layer.respond(transaction, make_response(
            cancel, 200, to_tag=session.local_tag if session else None), now)
        if invite_tx.final_sent or session is None:
            return
        self.layer.respond(invite_tx, make_response(invite_tx.request, 487,
                                                    to_tag=session.local_tag), now)
        self._end(session, "cancelled by caller", 487, now=now)
        self._events.append(CallEnded(session, True, "cancelled"))

    def _session_for_server(self, transaction: InviteServerTransaction) -> Session | None:
        request = transaction.request
        for session in self._sessions.values():
            if session.server_transaction is transaction and session.call_id == request.call_id:
                return session
        return None

    def _on_in_dialog(self, request: Request, transaction: ServerTransaction, now: float) -> None:
        key = (request.call_id, request.to.tag or "")
        session = self._sessions.get(key)
        if session is None and request.method == "NOTIFY":
            session = self._notify_only.get(key)  # a REFER's report after the call ended
        dialog = session.dialog if session else None
        if session is None or dialog is None or dialog.remote_tag != (request.from_.tag or ""):
            self.layer.respond(transaction, make_response(request, 481), now)
            return
        if not dialog.check_remote_cseq(request):
            self.layer.respond(transaction, make_response(request, 500, "CSeq out of order"),
                               now)
            return
        method = request.method
        if method == "BYE":
            self.layer.respond(transaction, make_response(request, 200), now)
            self._end(session, "remote hangup", now=now)
            self._events.append(CallEnded(session, True, "remote hangup"))
            return
        if method in ("INVITE", "UPDATE") and (refusal := self._timer_refusal(request)):
            self.layer.respond(transaction, refusal, now)
            return
        if method == "INVITE" and not self._accept_reinvite(session, request, transaction, now):
            return
        if method in TARGET_REFRESH:
            dialog.refresh_target(request)
        if method == "NOTIFY" and self._on_refer_notify(session, request, transaction, now):
            return
        if method == "UPDATE" and not request.body:  # a session refresh, nothing to negotiate
            self.respond(transaction, 200, now, session=session)
            return
        self._events.append(RequestInDialog(session, request, transaction))

    def _accept_reinvite(self, session: Session, request: Request,
                         transaction: ServerTransaction, now: float) -> bool:
        """Glare: 491 while our re-INVITE is pending, 500 while theirs is (RFC 3261 §14.2).

        A newer re-INVITE while our 2xx to the last one still waits for its ACK shows the
        far end had that 2xx (§14.1: no new INVITE while one is in progress): the wait ends
        as if the ACK had come (lost, or overtaken by this request).
        """
        if session._reinvite_ack_cseq is not None and session.state is SessionState.CONFIRMED:
            self._reinvite_acked(session, now)
        if session._reinvite_pending:
            self.layer.respond(transaction, make_response(request, 491), now)
            return False
        if session._incoming_reinvite is not None:
            self.layer.respond(transaction, make_response(
                request, 500, headers=[("Retry-After", str(self._rng.randint(0, 10)))]), now)
            return False
        assert isinstance(transaction, InviteServerTransaction)
        session._incoming_reinvite = transaction
        if request.body:
            session.remote_sdp = request.body
        return True

    def _answer_reinvite(self, session: Session, transaction: InviteServerTransaction,
                         response: Response, now: float) -> None:
        if response.status >= 200:
            session._incoming_reinvite = None
        if response.is_success:
            assert session.dialog is not None
            response.set("Contact", str(session.dialog.local_contact))
            if response.body:
                response.set("Content-Type", _SDP)
                session.local_sdp = response.body
        self.layer.respond(transaction, response, now)
        if response.is_success:
            self._resend_until_ack(session, transaction, now)

    def _resend_until_ack(self, session: Session, transaction: InviteServerTransaction,
                          now: float) -> None:
        """Resend our 2xx to a re-INVITE until its ACK, as the initial one (RFC 3261
        §13.3.1.4, §14.2): the same timers, and a BYE if no ACK comes within 64*T1.

        The server transaction only absorbs retransmitted re-INVITEs in Accepted (RFC 6026
        §7.1): these resends are what answers them. One wait per session, as a newer
        re-INVITE ends the last one's (:meth:`_accept_reinvite`). Not while the initial 2xx
        still waits for its ACK (that owns the slot), nor once the session is ending.
        """
        if session.state is not SessionState.CONFIRMED:
            return
        self._stop_retransmit(session)
        cseq = session._reinvite_ack_cseq = transaction.request.cseq.seq
        self._retransmit_2xx(session, transaction.target, transaction.hand_over_2xx(), now,
                             cseq)

    def _on_reinvite_ack(self, session: Session, ack: Request, now: float) -> None:
        """An ACK in a confirmed dialog: only the one for our awaited 2xx (its re-INVITE's
        CSeq number, from the far end of this dialog) stops the retransmissions; a late ACK
        of an older (re-)INVITE, or a retransmitted one, changes nothing."""
        dialog = session.dialog
        if session._reinvite_ack_cseq != ack.cseq.seq or dialog is None \
                or dialog.remote_tag != (ack.from_.tag or ""):
            return
        self._reinvite_acked(session, now)

    def _reinvite_acked(self, session: Session, now: float) -> None:
        """Our 2xx to a re-INVITE arrived: stop resending it; send what waited for it."""
        self._stop_retransmit(session)
        session._reinvite_ack_cseq = None
        held, session.held_requests = session.held_requests, []
        for request, kind, refer in held:
            self._send_in_dialog(session, request, kind, now, refer=refer)

    def _on_refer_notify(self, session: Session, request: Request,
                         transaction: ServerTransaction, now: float) -> bool:
        event = (request.get("event") or "").strip().lower()
        if not event.startswith("refer"):
            return False
        seq = _event_id(event)
        refer = self._refers.get((session.call_id, session.local_tag, seq or -1))
        if refer is None and seq is None:
            refer = next((r for r in self._refers.values()
                          if r.session is session and not r.done), None)
        if refer is None:
            self.layer.respond(transaction, make_response(request, 481, "No such subscription"),
                               now)
            return True
        try:
            status = parse_sipfrag_status(request.body)
        except SipParseError as error:
            self.layer.respond(transaction, make_response(request, 400, error.reason), now)
            return True
        state = parse_subscription_state(request.get("subscription-state") or "active")
        self.layer.respond(transaction, make_response(request, 200), now)
        refer.progress = status
        final = state.state == "terminated" or status >= 200
        if final:
            refer.done = True
        self._events.append(ReferNotify(refer, status, final))
        return True

    # ------------------------------------------------------------------ responses
    def _on_response(self, response: Response, transaction: object, now: float) -> None:
        if transaction is None:
            self._on_late_2xx(response, now)
            return
        assert isinstance(transaction, ClientTransaction)
        pending = self._pending.get(transaction)
        if pending is None:
            if response.is_success and response.cseq.method == "INVITE":
                self._on_late_2xx(response, now)
            return
        if response.status >= 200:
            del self._pending[transaction]
            if pending.probe is not None:
                self._probe_answered(pending, transaction, response, now)
            if pending.registration is not None:
                registration = pending.registration
                self._registration_answered(registration,
                                            registration.answered(response, now), now)
            if pending.memo is not None:
                self._events.append(RememberedDialogEnded(pending.memo, response.status))
        session = pending.session
        if session is None:
            return
        if (response.status in (401, 407) and pending.kind not in ("invite", "cancel")
                and self._retry_in_dialog_with_auth(session, pending, transaction, response,
                                                    now)):
            return
        if pending.kind == "invite":
            self._on_invite_response(session, transaction, response, now)
        elif pending.kind == "reinvite":
            self._on_reinvite_response(session, transaction, response, now)
        elif pending.kind == "bye" and response.status >= 200:
            self._end(session, session.end_reason or "local hangup", now=now)
            self._events.append(CallEnded(session, False, session.end_reason or "local hangup"))
        elif pending.kind == "refer" and pending.refer is not None and response.status >= 200:
            refer = pending.refer
            refer.status = response.status
            # RFC 4488: a 2xx with Refer-Sub: false means no NOTIFY will report the outcome
            subscribed = (response.get("refer-sub") or "true").strip().lower() != "false"
            if not response.is_success or not subscribed:
                refer.done = True
            self._events.append(ReferResponse(refer, response.status, subscribed))
        elif pending.kind == "request" and response.status >= 200:
            self._events.append(InDialogResponse(session, transaction.method, response))
        elif pending.kind == "refresh" and response.status >= 200:
            self._refresh_answered(session, transaction, response, now)

    def _on_invite_response(self, session: Session, transaction: ClientTransaction,
                            response: Response, now: float) -> None:
        status = response.status
        if status < 200:
            if session.cancel_requested and not session.cancel_sent:
                self._send_cancel(session, transaction, now)
                session.cancel_sent = True
            if status > 100:
                self._track_early_dialog(session, transaction, response)
                if self._prack_if_reliable(session, transaction, response, now):
                    return  # a retransmission of a reliable 1xx already PRACKed
                self._events.append(CallProgress(session, response))
            return
        if 200 <= status < 300:
            self._on_invite_success(session, transaction, response, now)
            return
        if status in (401, 407) and self._retry_with_auth(session, transaction, response, now):
            return
        if status == 503 and self._try_next_target(session, transaction, now):
            return
        if status == 422 and self._retry_longer(session, transaction, response, now):
            return
        self._end(session, f"{status} {response.reason}", status, now=now)
        self._events.append(CallFailed(session, status, response.reason))

    def _track_early_dialog(self, session: Session, transaction: ClientTransaction,
                            response: Response) -> None:
        """A 1xx with a To tag and a Contact creates an early dialog (RFC 3261 §13.2.2.4)."""
        tag = response.to.tag
        contact = response.contact
        if tag is None or tag in session.early_dialogs or contact is None:
            return
        if not isinstance(contact.uri, SipUri):
            return
        local = self.contact_for(transaction.target.transport)
        session.early_dialogs[tag] = Dialog.from_uac_response(transaction.request, response, local)

    def _on_invite_success(self, session: Session, transaction: ClientTransaction,
                           response: Response, now: float) -> None:
        if session.state is SessionState.CONFIRMED:
            self._drop_forked_answer(session, transaction.request, response, now)
            return
        early = session.early_dialogs.pop(response.to.tag or "", None)
        if early is not None:
            early.confirm(response)
            dialog = early
        else:
            contact = self.contact_for(transaction.target.transport)
            dialog = Dialog.from_uac_response(transaction.request, response, contact)
        session.dialog = dialog
        session.early_dialogs.clear()
        session.remote_sdp = response.body or session.remote_sdp
        self._send_ack(session, transaction.request, now)
        if session.cancel_requested:
            session.state = SessionState.CONFIRMED
            session.end_reason = "cancelled after answer"
            self.bye(session, now)
            return
        session.state = SessionState.CONFIRMED
        session.peer_methods = _methods(response)
        self._arm_session_timer(session, as_uac(response), now)
        self._events.append(CallAnswered(session, response))

    def _drop_forked_answer(self, session: Session, invite: Request, response: Response,
                            now: float) -> None:
        """A second 2xx from another fork: ACK it and hang it up (RFC 3261 §13.2.2.4)."""
        contact = self.contact_for(session.target.transport if session.target else "udp")
        fork = Dialog.from_uac_response(invite, response, contact)
        shadow = Session(self._new_id(), False, invite, SessionState.CONFIRMED, session.local_tag,
                         dialog=fork, target=session.target)
        self._send_ack(shadow, invite, now)
        self._send_in_dialog(shadow, fork.create_request("BYE"), "fork-bye", now)

    def _on_late_2xx(self, response: Response, now: float) -> None:
        """A retransmitted 2xx after the transaction ended: ACK it again."""
        session = self._sessions.get((response.call_id, response.from_.tag or ""))
        if session is None or session._ack_wire is None or session._ack_target is None:
            self.counters.stray_responses += 1
            return
        if session.dialog is not None and session.dialog.remote_tag == response.to.tag:
            self.layer.send_raw(session._ack_target, session._ack_wire)
        elif session.state is SessionState.CONFIRMED:
            self._drop_forked_answer(session, session.invite, response, now)

    def _try_next_target(self, session: Session, transaction: ClientTransaction,
                         now: float) -> bool:
        """RFC 3263 §4.3: the same INVITE, as a new transaction, to the next target."""
        if not session.fallback_targets or session.cancel_requested or session.early_dialogs:
            return False
        target = session.target = session.fallback_targets.pop(0)
        old = transaction.request
        retry = Request(old.method, old.uri, [(n, v) for n, v in old.headers if n != "via"],
                        old.body)
        retry.set("Contact", str(self.contact_for(target.transport)))
        session.invite = retry
        self.counters.failovers += 1
        self._send_invite(session, retry, now)
        return True

    def _retry_with_auth(self, session: Session, transaction: ClientTransaction,
                         response: Response, now: float) -> bool:
        """Re-send a challenged INVITE with credentials (at most twice per call)."""
        if session.auth_attempts >= 2:
            return False
        retry = self._authorized_copy(transaction.request, response,
                                      transaction.request.cseq.seq + 1, session.credentials)
        if retry is None:
            return False
        session.auth_attempts += 1
        session.invite = retry
        self._send_invite(session, retry, now)
        return True

    def _retry_in_dialog_with_auth(self, session: Session, pending: _Pending,
                                   transaction: ClientTransaction, response: Response,
                                   now: float) -> bool:
        """Re-send a challenged BYE, REFER, re-INVITE or other in-dialog request.

        PBXs commonly challenge REFER and BYE too; the retry takes the next CSeq,
        and a REFER's subscription follows it (its NOTIFYs carry the new id).
        """
        dialog = session.dialog
        if dialog is None or pending.auth_attempts >= 2:
            return False
        retry = self._authorized_copy(transaction.request, response, dialog.local_seq + 1,
                                      session.credentials)
        if retry is None:
            return False
        dialog.local_seq += 1
        refer = pending.refer
        if refer is not None:
            self._refers.pop((session.call_id, session.local_tag, refer.request.cseq.seq), None)
            refer.request = retry
            self._refers[(session.call_id, session.local_tag, dialog.local_seq)] = refer
        self._send_in_dialog(session, retry, pending.kind, now, refer=refer,
                             auth_attempts=pending.auth_attempts + 1)
        return True

    def _authorized_copy(self, old: Request, response: Response, seq: int,
                         credentials: Credentials | None = None) -> Request | None:
        """``old`` with a new CSeq and an answer to the 401/407 challenge, or None."""
        reply = "authorization" if response.status == 401 else "proxy-authorization"
        answer = self._answer_challenge(response, old, credentials)
        if answer is None:
            return None
        retry = Request(old.method, old.uri, [(n, v) for n, v in old.headers if n != "via"],
                        old.body)
        retry.set("CSeq", f"{seq} {old.method}")
        retry.set(reply, answer)
        return retry

    def _on_reinvite_response(self, session: Session, transaction: ClientTransaction,
                              response: Response, now: float) -> None:
        if response.status < 200:
            return
        session._reinvite_pending = False
        if response.is_success and session.dialog is not None:
            session.dialog.refresh_target(response)
            session.remote_sdp = response.body or session.remote_sdp
            self._send_ack(session, transaction.request, now)
            self._arm_session_timer(session, as_uac(response), now)
        elif response.status in (408, 481) and session.timer is not None:
            self._session_gone(session, response.status, now)
        elif response.status == 491 and session.local_sdp is not None:
            self._schedule_glare_retry(session, now)
            return
        self._events.append(InDialogResponse(session, "INVITE", response))

    def _schedule_glare_retry(self, session: Session, now: float) -> None:
        """RFC 3261 §14.1: the Call-ID owner waits 2.1-4 s, the other side 0-2 s."""
        owner = session.dialog is not None and session.dialog.is_uac
        delay = self._rng.uniform(2.1, 4.0) if owner else self._rng.uniform(0.0, 2.0)
        sdp = session.local_sdp or b""

        def retry(at: float) -> None:
            if session.state is SessionState.CONFIRMED and not session._reinvite_pending:
                self.reinvite(session, sdp, at)

        self.scheduler.call_at(now + delay, retry)

    def _probe_answered(self, pending: _Pending, transaction: ClientTransaction,
                        response: Response, now: float) -> None:
        """A probe's final answer; one challenge is answered before reporting."""
        probe = pending.probe
        assert probe is not None
        if response.status in (401, 407) and pending.auth_attempts == 0:
            retry = self._authorized_copy(transaction.request, response,
                                          transaction.request.cseq.seq + 1, probe.credentials)
            if retry is not None:
                retry.add("Via", self._via(transaction.target.transport), first=True)
                again = self.layer.send_request(retry, transaction.target, now)
                self._pending[again] = _Pending(None, "probe", auth_attempts=1, probe=probe)
                return
        probe.status, probe.response = response.status, response
        self._events.append(ProbeResult(probe, response.status))

    def _on_timeout(self, transaction: object, now: float, transport_error: bool) -> None:
        if not isinstance(transaction, ClientTransaction):
            return
        pending = self._pending.pop(transaction, None)
        if pending is not None and pending.registration is not None:
            status, reason = (503, "no route to the registrar (transport error)") \
                if transport_error else (408, "the registrar did not answer")
            registration = pending.registration
            self._registration_answered(registration,
                                        registration.failed(status, reason, now), now)
            return
        if pending is not None and pending.probe is not None:
            pending.probe.status = 503 if transport_error else 408
            self._events.append(ProbeResult(pending.probe, pending.probe.status))
        if pending is not None and pending.memo is not None:
            self._events.append(RememberedDialogEnded(pending.memo,
                                                      503 if transport_error else 408))
        if pending is None or pending.session is None:
            return
        session = pending.session
        if pending.kind == "invite" and self._try_next_target(session, transaction, now):
            return
        if pending.kind == "invite" and not session.ended:
            status, reason = (503, "Service Unavailable (transport error)") if transport_error \
                else (408, "Request Timeout")
            self._end(session, reason, status, now=now)
            self._events.append(CallFailed(session, status, reason))
        elif pending.kind == "bye":
            self._end(session, session.end_reason or "local hangup (BYE timed out)", now=now)
            self._events.append(CallEnded(session, False, "BYE timed out"))
        elif pending.kind == "reinvite":
            session._reinvite_pending = False
            self._events.append(InDialogResponse(session, "INVITE", None))
            if session.timer is not None:
                self._session_gone(session, 408, now)
        elif pending.kind == "refresh":
            self._session_gone(session, 408, now)
        elif pending.kind == "refer" and pending.refer is not None:
            pending.refer.status = 408
            pending.refer.done = True
            self._events.append(ReferResponse(pending.refer, 408))
        elif pending.kind == "request":
            self._events.append(InDialogResponse(session, transaction.method, None))


class _ReliableProvisional:
    """Re-sends a reliable 1xx at T1, 2*T1 ... until its PRACK; 504 after 64*T1 (RFC 3262 §3).

    An object rather than a closure, like _TwoXXRetransmitter: no reference cycle.
    """

    __slots__ = ("give_up", "interval", "session", "target", "ua", "wire")

    def __init__(self, ua: UserAgent, session: Session, target: Target, wire: bytes,
                 give_up: float) -> None:
        self.ua = ua
        self.session = session
        self.target = target
        self.wire = wire
        self.give_up = give_up
        self.interval = ua.config.timers.t1

    def fire(self, at: float) -> None:
        session, ua = self.session, self.ua
        session._retransmit = None
        if session.state is not SessionState.INCOMING or session.unacked_rseq is None:
            return
        if at >= self.give_up:
            ua.reject(session, 504, at, reason="Server Time-out (no PRACK)")
            ua._events.append(CallEnded(session, False, "no PRACK for a reliable 1xx"))
            return
        if not self.target.reliable:
            ua.layer.send_raw(self.target, self.wire)
        self.interval *= 2
        session._retransmit = ua.scheduler.call_at(min(at + self.interval, self.give_up),
                                                   self.fire)


class _TwoXXRetransmitter:
    """Re-sends a 2xx at T1, 2*T1 ... capped at T2 until the ACK; BYE after 64*T1 (§13.3.1.4).

    ``cseq`` is None for the 2xx to the initial INVITE, else the CSeq number of the
    re-INVITE the 2xx answers: the same timers, and the same BYE when no ACK comes
    (§14.2: "If a UAS generates a 2xx response and never receives an ACK, it SHOULD
    generate a BYE to terminate the dialog").

    A small object rather than a closure, so that no reference cycle is left for
    the garbage collector at the end of every call.
    """

    __slots__ = ("cseq", "give_up", "interval", "session", "target", "ua", "wire")

    def __init__(self, ua: UserAgent, session: Session, target: Target, wire: bytes,
                 give_up: float, cseq: int | None = None) -> None:
        self.ua = ua
        self.session = session
        self.target = target
        self.wire = wire
        self.give_up = give_up
        self.cseq = cseq
        self.interval = ua.config.timers.t1

    def waiting(self) -> bool:
        """Whether the ACK is still awaited (not arrived, the session not ending)."""
        session = self.session
        if self.cseq is None:
            return session.state is SessionState.ANSWERED
        return session.state is SessionState.CONFIRMED and \
            session._reinvite_ack_cseq == self.cseq

    def fire(self, at: float) -> None:
        session, ua = self.session, self.ua
        session._retransmit = None
        if not self.waiting():
            return
        if at >= self.give_up:
            session._reinvite_ack_cseq = None
            session.end_reason = "no ACK for 2xx" if self.cseq is None \
                else "no ACK for 2xx to re-INVITE"
            ua.bye(session, at)
            return
        if not self.target.reliable:
            ua.layer.send_raw(self.target, self.wire)
        self.interval = min(self.interval * 2, ua.config.timers.t2)
        session._retransmit = ua.scheduler.call_at(min(at + self.interval, self.give_up),
                                                   self.fire)


def _transport_of(session: Session) -> str:
    if session.flow is not None:
        return session.flow.transport
    if session.target is not None:
        return session.target.transport
    via: Via = session.invite.top_via
    return {"TCP": "tcp", "TLS": "tls"}.get(via.transport, "udp")


def _waits_for_ack(session: Session, request: Request) -> bool:
    """Whether a request of ours in the dialog must wait for the ACK to our 2xx.

    After our 2xx to the initial INVITE, everything waits: the far end has no dialog
    until the 2xx reaches it (a REFER sent at once overtook it through a proxy's
    parallel workers and got 481), and the callee must not BYE before the ACK (§15).

    After our 2xx to a re-INVITE the dialog is up at both ends, so only a new offer
    waits: an INVITE of ours (§14.1: no INVITE while another is in progress in either
    direction) or an UPDATE with a body (if that 2xx carried our offer, its answer comes
    in the ACK: one offer at a time, RFC 3264, RFC 3311 §5.1). A BYE, REFER, INFO or
    NOTIFY goes at once: hanging up must not wait up to 64*T1 for a lost ACK.
    """
    if session.inbound and session.state is SessionState.ANSWERED:
        return True
    if session._reinvite_ack_cseq is None or session.state is not SessionState.CONFIRMED:
        return False
    return request.method == "INVITE" or (request.method == "UPDATE" and bool(request.body))


def _event_id(event: str) -> int | None:
    _, _, params = event.partition(";")
    for item in params.split(";"):
        name, _, value = item.partition("=")
        if name.strip() == "id" and is_digits(value.strip()):
            return int(value.strip())
    return None


def _record_route(request: Request) -> list[tuple[str, str]]:
    """The request's Record-Route, for a response that creates a dialog (RFC 3261 §12.1.1).

    Proxies that record-route (Kamailio's record_route()) learn the route of
    the dialog from it; without it the ACK and every later request bypass them.
    """
    return [("Record-Route", value) for value in request.values("record-route")]


def _request_uri(to: str | SipUri) -> SipUri:
    """``to`` fit for a Request-URI and To: no headers, no method (RFC 3261 §19.1.5).

    A destination's URI headers are not sent: a URI from configuration or an
    API request must not inject headers into our INVITE.
    """
    uri = parse_uri(to) if isinstance(to, str) else to
    if not isinstance(uri, SipUri):
        raise ValueError(f"can only call sip: or sips: URIs, not {to}")
    if not uri.headers and uri.param("method") is None:
        return uri
    return uri.replace(headers=(), params=tuple(p for p in uri.params if p[0] != "method"))


class _SessionTimerFire:
    """The session timer's callback as an object, not a closure (no reference cycle)."""

    __slots__ = ("session", "ua")

    def __init__(self, ua: UserAgent, session: Session) -> None:
        self.ua = ua
        self.session = session

    def fire(self, at: float) -> None:
        self.ua._session_timer_fired(self.session, at)


def _methods(message: Request | Response) -> frozenset[str]:
    """The methods a peer's Allow lists (none when it has no readable Allow)."""
    try:
        return frozenset(method.upper() for method in message.allow)
    except SipParseError:
        return frozenset()


def _unless_given(defaults: list[tuple[str, str]],
                  given: list[tuple[str, str]] | None) -> list[tuple[str, str]]:
    """``defaults`` minus the headers the application set itself (its values win)."""
    names = {name.lower() for name, _ in given or []}
    return [(name, value) for name, value in defaults if name.lower() not in names]
