"""Trunks: the carriers and PBXs warmline calls through, authenticates with, registers at.

A destination is routed through the first trunk that serves it (glob patterns
over the URI, or by default the trunk's own domain): the INVITE then answers
that trunk's digest challenges with its account, goes through its outbound
proxy when it has one (a pre-loaded Route, RFC 3261 §8.1.2), and shows the
trunk's caller ID when one is set. ``tel:`` destinations (E.164 numbers) only
make sense through a trunk: they become ``sip:NUMBER@trunk;user=phone``.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from warmline.media.sdes import SrtpPolicy
from warmline.sip.auth import Credentials
from warmline.sip.errors import SipParseError
from warmline.sip.uri import SipUri, TelUri, parse_uri


class NoRoute(ValueError):
    """A destination no trunk serves and warmline cannot call directly (a tel: number)."""


@dataclass(frozen=True)
class Trunk:
    name: str
    uri: SipUri  # the provider's domain or PBX: destinations' host, and the registrar
    credentials: Credentials | None = None
    register: bool = False
    expires: int = 600
    outbound_proxy: SipUri | None = None  # every initial request goes through it
    caller_id: str | None = None  # the From of calls through this trunk (a number it accepts)
    destinations: tuple[str, ...] = ()  # globs over the URI; () -> URIs on the trunk's host
    srtp: SrtpPolicy | None = None  # for legs placed through it; None: the [media] policy

    def serves(self, destination: str) -> bool:
        if self.destinations:
            return any(fnmatch.fnmatchcase(destination.lower(), pattern.lower())
                       for pattern in self.destinations)
        uri = _parse(destination)
        return isinstance(uri, SipUri) and uri.bare_host.lower() == self.uri.bare_host.lower()

    @property
    def aor(self) -> SipUri:
        """What we register as: the account's user at the trunk's domain."""
        user = self.credentials.username if self.credentials else "warmline"
        return SipUri(host=self.uri.host, user=user, scheme=self.uri.scheme)

    @property
    def next_hop(self) -> SipUri:
        """Where requests through this trunk are sent first."""
        return self.outbound_proxy or self.uri

    @property
    def route_headers(self) -> list[tuple[str, str]]:
        """A pre-loaded Route to the outbound proxy (loose routing, RFC 3261 §8.1.2)."""
        proxy = self.outbound_proxy
        if proxy is None:
            return []
        lr = proxy if proxy.lr else proxy.replace(params=(*proxy.params, ("lr", None)))
        return [("Route", f"<{lr}>")]

    def request_uri(self, destination: str) -> SipUri:
        """``destination`` as a SIP URI on this trunk (tel: numbers become user=phone)."""
        uri = _parse(destination)
        if isinstance(uri, TelUri):  # visual separators (RFC 3966) are not dialled
            number = "".join(ch for ch in uri.number if ch.isdigit() or ch == "+")
            return SipUri(host=self.uri.host, user=number, port=self.uri.port,
                          params=(("user", "phone"),), scheme=self.uri.scheme)
        if not isinstance(uri, SipUri):
            raise NoRoute(f"{destination!r} is not a sip:, sips: or tel: URI")
        return uri


@dataclass(frozen=True)
class Route:
    """How one call to a destination is placed."""

    request_uri: SipUri
    next_hop: SipUri  # resolved (RFC 3263) for the targets to try
    trunk: Trunk | None = None

    @property
    def headers(self) -> list[tuple[str, str]]:
        """A pre-loaded Route to the trunk's outbound proxy, if it has one."""
        return self.trunk.route_headers if self.trunk else []

    @property
    def credentials(self) -> Credentials | None:
        return self.trunk.credentials if self.trunk else None


@dataclass(frozen=True)
class Trunks:
    """The configured trunks, in order; the first that serves a destination takes it."""

    trunks: tuple[Trunk, ...] = ()

    @property
    def accounts(self) -> list[Credentials]:
        """Every trunk's account: the UA answers a challenge to a request outside a trunk's
        own calls with the one for its realm (a carrier challenging the REFER or BYE of a
        call it sent us)."""
        return [trunk.credentials for trunk in self.trunks if trunk.credentials]

    def route_via(self, name: str, destination: str) -> Route:
        """``destination`` through the trunk called ``name``, whatever its globs say
        (NoRoute naming it when there is no such trunk)."""
        for trunk in self.trunks:
            if trunk.name == name:
                return Route(trunk.request_uri(destination), trunk.next_hop, trunk)
        known = ", ".join(trunk.name for trunk in self.trunks) or "none configured"
        raise NoRoute(f"no trunk named {name!r} ({known})")

    def route(self, destination: str) -> Route:
        """How to call ``destination``; NoRoute when nothing can (tel: without a trunk)."""
        for trunk in self.trunks:
            if trunk.serves(destination):
                return Route(trunk.request_uri(destination), trunk.next_hop, trunk)
        uri = _parse(destination)
        if isinstance(uri, TelUri):
            raise NoRoute(f"{destination!r}: a tel: number needs a trunk that serves it")
        if not isinstance(uri, SipUri):
            raise NoRoute(f"{destination!r} is not a sip:, sips: or tel: URI")
        return Route(uri, uri)


def _parse(text: str) -> SipUri | TelUri | None:
    try:
        uri = parse_uri(text)
    except SipParseError:
        return None
    return uri if isinstance(uri, SipUri | TelUri) else None
