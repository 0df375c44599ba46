"""Dialogs (RFC 3261 §12): identity, route set, remote target and CSeq spaces.

In-dialog requests always go to the remote target learnt from Contact (or
through the route set), never to the address-of-record in To/From: that is
the bug that breaks REFER and BYE behind proxies in other Python stacks.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from warmline.sip.errors import SipParseError
from warmline.sip.events import Target
from warmline.sip.headers import NameAddr
from warmline.sip.message import Request, Response
from warmline.sip.uri import SipUri

# Requests whose Contact replaces the remote target (RFC 3261 §12.2, RFC 3311, RFC 6665).
TARGET_REFRESH = frozenset({"INVITE", "UPDATE", "SUBSCRIBE", "NOTIFY", "REFER"})


class DialogState(enum.Enum):
    EARLY = "early"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


@dataclass(slots=True)
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str
    local_address: NameAddr
    remote_address: NameAddr
    remote_target: SipUri
    local_contact: NameAddr
    local_seq: int
    remote_seq: int | None = None
    route_set: list[NameAddr] = field(default_factory=list)
    secure: bool = False
    state: DialogState = DialogState.EARLY
    is_uac: bool = True

    @property
    def id(self) -> tuple[str, str, str]:
        return (self.call_id, self.local_tag, self.remote_tag)

    @classmethod
    def from_uac_response(
        cls, request: Request, response: Response, local_contact: NameAddr
    ) -> Dialog:
        """Create the UAC side from a 1xx/2xx with a To tag (§12.1.2)."""
        remote_tag = response.to.tag
        if remote_tag is None:
            raise SipParseError("response that creates a dialog has no To tag")
        return cls(
            call_id=request.call_id,
            local_tag=request.from_.tag or "",
            remote_tag=remote_tag,
            local_address=request.from_,
            remote_address=response.to,
            remote_target=_contact_uri(response, fallback=request.uri),
            local_contact=local_contact,
            local_seq=request.cseq.seq,
            route_set=list(reversed(response.record_route)),
            secure=_is_secure(request),
            state=DialogState.CONFIRMED if response.is_success else DialogState.EARLY,
            is_uac=True,
        )

    @classmethod
    def from_uas_request(cls, request: Request, local_tag: str, local_contact: NameAddr) -> Dialog:
        """Create the UAS side when answering with a To tag (§12.1.1)."""
        return cls(
            call_id=request.call_id,
            local_tag=local_tag,
            remote_tag=request.from_.tag or "",
            local_address=request.to.with_tag(local_tag),
            remote_address=request.from_,
            remote_target=_contact_uri(request),
            local_contact=local_contact,
            local_seq=0,
            remote_seq=request.cseq.seq,
            route_set=list(request.record_route),
            secure=_is_secure(request),
            is_uac=False,
        )

    def create_request(
        self, method: str, headers: list[tuple[str, str]] | None = None, body: bytes = b""
    ) -> Request:
        """A new in-dialog request; ACK and CANCEL reuse the INVITE's CSeq (use ack_for)."""
        self.local_seq += 1
        return self._build(method, self.local_seq, headers or [], body)

    def ack_for(self, invite: Request, body: bytes = b"") -> Request:
        """The ACK for a 2xx: same CSeq number as the INVITE, new branch (§13.2.2.4)."""
        return self._build("ACK", invite.cseq.seq, [], body)

    def _build(
        self, method: str, seq: int, headers: list[tuple[str, str]], body: bytes
    ) -> Request:
        uri, routes = self._request_uri_and_routes()
        base: list[tuple[str, str]] = [("Route", str(route)) for route in routes]
        base += [
            ("Max-Forwards", "70"),
            ("From", str(self.local_address)),
            ("To", str(self.remote_address)),
            ("Call-ID", self.call_id),
            ("CSeq", f"{seq} {method}"),
        ]
        if method not in ("ACK", "CANCEL", "BYE"):
            base.append(("Contact", str(self.local_contact)))
        return Request(method, uri, base + headers, body)

    def _request_uri_and_routes(self) -> tuple[SipUri, list[NameAddr]]:
        """Loose routing normally, strict routing if the first route lacks ;lr (§12.2.1.1)."""
        if not self.route_set:
            return self.remote_target, []
        first = self.route_set[0].sip_uri
        if first.lr:
            return self.remote_target, list(self.route_set)
        return first.replace(headers=()), [*self.route_set[1:], NameAddr(self.remote_target)]

    def next_hop(self) -> SipUri:
        """The URI whose host/port/transport the request is sent to."""
        if self.route_set:
            return self.route_set[0].sip_uri
        return self.remote_target

    def check_remote_cseq(self, request: Request) -> bool:
        """Accept in-order requests (§12.2.2); False means answer 500."""
        if request.method in ("ACK", "CANCEL"):
            return True
        seq = request.cseq.seq
        if self.remote_seq is not None and seq <= self.remote_seq:
            return False
        self.remote_seq = seq
        return True

    def refresh_target(self, message: Request | Response) -> None:
        """Update the remote target from a target-refresh request or its 2xx."""
        contact = message.contact
        if contact is not None and isinstance(contact.uri, SipUri):
            self.remote_target = contact.uri

    def confirm(self, response: Response) -> None:
        if self.state is DialogState.EARLY:
            self.state = DialogState.CONFIRMED
            self.route_set = list(reversed(response.record_route)) or self.route_set
            self.refresh_target(response)


def _contact_uri(message: Request | Response, fallback: object = None) -> SipUri:
    """The SIP URI in Contact; a UAC falls back to the Request-URI for a sloppy 2xx."""
    contact = message.contact
    if contact is not None and isinstance(contact.uri, SipUri):
        return contact.uri
    if isinstance(fallback, SipUri):
        return fallback
    raise SipParseError("dialog-creating message needs a Contact with a SIP URI")


def _is_secure(request: Request) -> bool:
    return isinstance(request.uri, SipUri) and request.uri.secure


def target_for_uri(uri: SipUri, default_transport: str = "udp") -> Target:
    """Resolve a URI to a transport target (RFC 3263 without DNS: literal hosts only)."""
    transport = uri.transport or ("tls" if uri.secure else default_transport)
    if transport == "tcp" and uri.secure:
        transport = "tls"
    port = uri.port or (5061 if transport == "tls" else 5060)
    maddr = uri.param("maddr")
    host = maddr if maddr else uri.bare_host
    return Target(transport, host, port)
