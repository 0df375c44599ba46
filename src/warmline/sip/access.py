"""Who may start things with us over SIP, and how fast: access modes and a per-source limiter.

A listener on a public address hears internet scanners within minutes
(sipvicious and friends): INVITEs to premium numbers, OPTIONS floods,
password guessing. So an out-of-dialog request is taken only from a trusted
network (a carrier's SBC, the PBX, a Kamailio in front), or, where the
listener says so, from whoever answers a digest challenge. Everyone else
gets 403 before any call state exists.

The limiter is Kamailio's pike idea: each untrusted source address has a
token bucket; a source over its rate is dropped before its message is even
parsed, because parsing is what a flood makes us pay for. Trusted sources
are never limited: a carrier's SBC legitimately sends hundreds of messages
a second. Both are pure (a clock is passed in), like the rest of the core.
"""

from __future__ import annotations

import enum
import ipaddress
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
LOOPBACK = ("127.0.0.0/8", "::1/128")


class AccessMode(enum.Enum):
    """What a listener does with a new request from outside the trusted networks."""

    TRUSTED = "trusted"  # refused: 403
    CHALLENGE = "challenge"  # a digest challenge (401); taken once answered
    OPEN = "open"  # taken from anyone: only for a listener nobody else can reach


def parse_networks(values: Iterable[str], key: str = "trusted") -> tuple[Network, ...]:
    """CIDRs (or bare addresses) as networks; ValueError naming ``key`` and the bad value."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{key}: {value!r} is not an address or a network "
                             "(e.g. 192.0.2.0/24)") from None
    return tuple(networks)


def in_networks(host: str, networks: tuple[Network, ...]) -> bool:
    """Whether ``host`` (an address; a name is never trusted) is in one of ``networks``."""
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:192.0.2.1 from a dual-stack socket
    return any(address.version == network.version and address in network
               for network in networks)


@dataclass(frozen=True)
class RateLimit:
    """``rate`` messages a second per source, in bursts up to ``burst``; rate 0: no limit."""

    rate: float = 0.0
    burst: float = 0.0
    max_sources: int = 100_000  # sources remembered; the least recent are forgotten

    def __post_init__(self) -> None:
        if self.rate < 0 or self.burst < 0 or self.max_sources < 1:
            raise ValueError("rate limit: rate and burst must be >= 0, max_sources >= 1")

    @property
    def enabled(self) -> bool:
        return self.rate > 0


class SourceLimiter:
    """A token bucket per source address, in a table of bounded size.

    The table is least-recently-used ordered, so a flood from spoofed random
    addresses costs at most ``max_sources`` entries and evicts only sources
    that have been quiet longest (a quiet source has a full bucket anyway:
    forgetting it loses nothing).
    """

    def __init__(self, limit: RateLimit) -> None:
        self.limit = limit
        self.capacity = max(limit.burst, limit.rate, 1.0)  # a bucket that can hold one
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # tokens, at
        self.dropped = 0

    def allow(self, source: str, now: float) -> bool:
        """Take one token for ``source``; False (and counted) when it has none left."""
        if not self.limit.enabled:
            return True
        if ":" in source:  # IPv6: one host holds a whole /64 to rotate through
            source = _prefix64(source)
        tokens, at = self._buckets.pop(source, (self.capacity, now))
        tokens = min(self.capacity, tokens + (now - at) * self.limit.rate)
        allowed = tokens >= 1.0
        self._buckets[source] = (tokens - 1.0 if allowed else tokens, now)
        if len(self._buckets) > self.limit.max_sources:
            self._buckets.popitem(last=False)
        if not allowed:
            self.dropped += 1
        return allowed

    def __len__(self) -> int:
        return len(self._buckets)


def _prefix64(host: str) -> str:
    try:
        return str(ipaddress.ip_network(f"{host.strip('[]')}/64", strict=False))
    except ValueError:
        return host
