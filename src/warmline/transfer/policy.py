"""Where a transfer asked for over the API may go: the defence against toll fraud.

A stolen API token (or a bot talked into it) must not be able to dial a
premium-rate number through the carrier trunk. So a destination given in a
request is checked against the operator's list before anything is dialled:

- a pattern in ``[transfer] allow`` matches it: ``sip:*@pbx.example.com``,
  ``sip:1???@10.0.0.0/24``, ``tel:+4420*``. Patterns are matched part by part
  (scheme, user, host, port), never as one string, so
  ``sip:x@evil.example;a=@pbx.example.com`` cannot pass for the PBX; a host
  glob matches label by label (``*.example.com`` is one label deep, and
  ``10.0.0.*`` never matches ``10.0.0.1.attacker.example``), and a host
  written as an address or a network is compared as one;
- or, for a call placed directly (not through a trunk), its host is an
  address in ``[transfer] trusted`` (by default loopback only). A call a trunk
  would carry needs a pattern, whatever its host says: ``sip:+1900...@127.0.0.1``
  routed to the carrier by a trunk's ``sip:+*@*`` glob is refused.

A ``maddr`` parameter (send it somewhere else than the host) is refused
outright: the host checked would not be where the INVITE goes.

Destinations the operator wrote into the config (escalation targets,
departments, flows) are not requests and are not checked here.
"""

from __future__ import annotations

import fnmatch
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from warmline.sip.access import LOOPBACK, Network, in_networks, parse_networks
from warmline.sip.errors import SipParseError
from warmline.sip.uri import SipUri, TelUri, parse_uri
from warmline.transfer.handoff import is_agent_uri


class PolicyError(ValueError):
    """A pattern in ``[transfer] allow`` that cannot be understood (names it)."""


@dataclass(frozen=True)
class DestinationPattern:
    """One allow-list entry: globs for the user and host (``*``, ``?``, ``[...]``)."""

    scheme: str  # sip (matches sip: and sips:), sips or tel
    user: str  # a glob; for tel: the number
    host: str = "*"  # a glob over the host's labels, lower case; unused for tel:
    port: int | None = None  # None: any
    network: Network | None = None  # the host written as an address or a network

    @classmethod
    def parse(cls, text: str) -> DestinationPattern:
        scheme, sep, rest = text.strip().partition(":")
        scheme = scheme.lower()
        if not sep or scheme not in ("sip", "sips", "tel") or not rest:
            raise PolicyError(f"transfer.allow: {text!r} is not sip:USER@HOST, sips:... "
                              "or tel:NUMBER (globs allowed)")
        if scheme == "tel":
            return cls("tel", rest)
        user, at, hostport = rest.rpartition("@")
        if not at:
            user, hostport = "*", rest
        host, port = _split_port(text, hostport)
        try:
            network: Network | None = ipaddress.ip_network(host, strict=False)
        except ValueError:
            network = None
        return cls(scheme, user or "*", host.lower(), port, network)

    def matches(self, uri: SipUri | TelUri) -> bool:
        if isinstance(uri, TelUri):
            return self.scheme == "tel" and fnmatch.fnmatchcase(_dialled(uri.number), self.user)
        if self.scheme == "tel" or (self.scheme == "sips" and uri.scheme != "sips"):
            return False
        return (fnmatch.fnmatchcase(uri.user or "", self.user) and self._host_matches(uri)
                and (self.port is None or self.port == (uri.port or _default_port(uri))))

    def _host_matches(self, uri: SipUri) -> bool:
        host = uri.bare_host.lower()
        if self.network is not None:
            return in_networks(host, (self.network,))
        labels, wanted = host.split("."), self.host.split(".")
        return len(labels) == len(wanted) and all(
            fnmatch.fnmatchcase(label, glob) for label, glob in zip(labels, wanted, strict=True))


@dataclass(frozen=True)
class DestinationPolicy:
    """The allow-list and the trusted networks a request's destination is checked against."""

    allow: tuple[DestinationPattern, ...] = ()
    trusted: tuple[Network, ...] = parse_networks(LOOPBACK)
    section: str = "transfer"  # the config section the refusal tells the operator to edit

    @classmethod
    def build(cls, patterns: list[str] | tuple[str, ...],
              trusted: list[str] | tuple[str, ...] = LOOPBACK,
              section: str = "transfer") -> DestinationPolicy:
        """From config text; PolicyError or ValueError naming the bad entry."""
        return cls(tuple(DestinationPattern.parse(text) for text in patterns),
                   parse_networks(trusted, f"{section}.trusted"), section)

    def problem(self, destination: str, through_trunk: bool = False) -> str | None:
        """None when ``destination`` may be dialled; else why not, for a 403.

        ``through_trunk``: the call would go out through a trunk (a carrier), so
        only an allow-list pattern lets it through.
        """
        if is_agent_uri(destination):
            return self._agent_problem(destination)
        try:
            uri = parse_uri(destination)
        except SipParseError as error:
            return f"{destination!r} is not a URI ({error.reason})"
        if not isinstance(uri, SipUri | TelUri):
            return f"{destination!r} is not a sip:, sips: or tel: URI"
        if isinstance(uri, SipUri) and uri.param("maddr") is not None:
            return f"{destination}: maddr is not allowed in a destination"
        if any(pattern.matches(uri) for pattern in self.allow):
            return None
        if isinstance(uri, SipUri) and not through_trunk \
                and in_networks(uri.bare_host, self.trusted):
            return None
        where = "" if through_trunk else f", or its address to [{self.section}] trusted"
        return f"{destination} is not an allowed destination: add a pattern to " \
               f"[{self.section}] allow{where}"

    def _agent_problem(self, destination: str) -> str | None:
        """agent:NAME was written by the operator; a ws:// URL in a request is only let
        through to a trusted address (loopback by default), so a request cannot make
        warmline stream a caller's voice to a stranger's server."""
        if destination.lower().startswith("agent:"):
            return None
        host = urlsplit(destination).hostname or ""
        if in_networks(host, self.trusted):
            return None
        return (f"{destination} is not an allowed agent: name it in [agents.NAME] and ask "
                "for agent:NAME, or add its address to [transfer] trusted")


def _split_port(text: str, hostport: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        host, _, port = hostport[1:].partition("]")
        port = port.removeprefix(":")
    elif hostport.count(":") == 1:
        host, _, port = hostport.partition(":")
    else:
        host, port = hostport, ""
    if not host or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise PolicyError(f"transfer.allow: {text!r} has no host or a bad port")
    return host, int(port) if port else None


def _default_port(uri: SipUri) -> int:
    return 5061 if uri.scheme == "sips" else 5060


def _dialled(number: str) -> str:
    """A tel: number as dialled: ``+`` and digits, visual separators gone (RFC 3966)."""
    return "".join(ch for ch in number if ch.isdigit() or ch == "+")
