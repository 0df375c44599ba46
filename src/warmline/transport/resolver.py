"""Where to send a SIP request: RFC 3263 server location (NAPTR, SRV, A/AAAA) over async DNS.

A transfer to ``sip:human@pbx.example`` names a domain, not a socket address: the
domain's NAPTR records say which transports it offers, its SRV records which hosts
and ports (with priorities for failover and weights for load sharing), its A and
AAAA records the addresses. :class:`Resolver` walks that chain and hands back every
:class:`Target` worth trying, best first, so the caller can fail over down the list.

It never blocks the event loop: DNS goes through dnspython's asyncio resolver, names
for the system resolver through ``loop.getaddrinfo`` (run in the loop's executor).
Every query is bounded by ``timeout``, answers are cached for their TTL, and every
way DNS can fail ends as a :class:`ResolutionError` with a short reason.
"""

from __future__ import annotations

import asyncio
import logging
import random
import socket
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar, cast

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.nameserver
import dns.rdata
import dns.rdatatype
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.NAPTR
import dns.rdtypes.IN.SRV
import dns.resolver

from warmline.sip.events import Target
from warmline.sip.uri import SipUri, is_ip_address

log = logging.getLogger("warmline.transport")

DEFAULT_PORTS = {"udp": 5060, "tcp": 5060, "tls": 5061}
# Most secure first: the order SRV records are tried in when no NAPTR says otherwise.
_SRV_SERVICES = {"tls": "_sips._tcp", "tcp": "_sip._tcp", "udp": "_sip._udp"}
_NAPTR_SERVICES = {"SIP+D2U": "udp", "SIP+D2T": "tcp", "SIPS+D2T": "tls"}

NO_SUCH_NAME = "no such name"
NO_RECORDS = "no records"  # one query's empty answer, in the steps
NO_SIP_SERVER = "no SIP server records"  # the whole search came back empty
UNREADABLE = "unreadable DNS answer"

HOSTS_PATH = Path("/etc/hosts")
NEGATIVE_TTL = 5  # seconds to remember "no such name" / "no records" when no SOA says how long
_EDNS_PAYLOAD = 1232  # the DNS flag day 2020 size: big NAPTR/SRV sets without falling back to TCP
_MAX_SERVER_HOSTS = 32  # SRV targets expanded to addresses, whatever a zone lists
_NXDOMAIN = "NXDOMAIN"  # cache key type: a name that does not exist has no records of any type

R = TypeVar("R")


@dataclass(frozen=True)
class Resolution:
    """Where a URI leads: every target to try, in order, and how we found out."""

    name: str  # what was looked up (the URI's host, or maddr)
    targets: tuple[Target, ...]  # every target to try, in order (failover goes down the list)
    steps: tuple[str, ...]  # what was asked and answered, one line each (logs, `warmline probe`)


class ResolutionError(Exception):
    """A name that cannot be reached: ``name`` and a short ``reason``; str() is 'NAME: REASON'.

    ``steps`` keeps what was asked before giving up, for the same logs and probe output
    a successful :class:`Resolution` feeds.
    """

    def __init__(self, name: str, reason: str, steps: Sequence[str] = ()) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason
        self.steps = tuple(steps)


class SrvRecord(NamedTuple):
    priority: int
    weight: int
    port: int
    target: str  # "." when the service is decidedly not offered (RFC 2782)


class _Naptr(NamedTuple):
    order: int
    preference: int
    flags: str
    service: str
    regexp: str
    replacement: str


class _Service(NamedTuple):
    """One SRV name to ask and the transport its servers speak."""

    transport: str
    srv_name: str


@dataclass(frozen=True, slots=True)
class _Answer(Generic[R]):
    """One DNS question's outcome: records, a negative answer, or a failure."""

    records: tuple[R, ...] = ()
    ttl: int = 0  # seconds the answer stays true (what is left of it when cached)
    problem: str | None = None  # why there are no records
    failed: bool = False  # the server could not tell (timeout, SERVFAIL, unreadable): not cached
    cached: bool = False


@dataclass(frozen=True, slots=True)
class _Addresses:
    """The addresses of one host, with the step lines that found them."""

    addresses: tuple[str, ...]
    lines: tuple[str, ...]
    problem: str | None = None
    failed: bool = False


class _TtlCache:
    """DNS answers keyed by (name, type), kept until their TTL runs out.

    Bounded: past ``max_entries`` the oldest entry goes first.
    """

    def __init__(self, max_entries: int, clock: Callable[[], float]) -> None:
        self._max_entries = max_entries
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[float, _Answer[Any]]] = {}

    def get(self, key: tuple[str, str]) -> _Answer[Any] | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires, answer = entry
        left = expires - self._clock()
        if left <= 0:
            del self._entries[key]
            return None
        return replace(answer, ttl=max(1, round(left)), cached=True)

    def put(self, key: tuple[str, str], answer: _Answer[Any]) -> None:
        if self._max_entries <= 0 or answer.ttl <= 0:
            return
        self._entries.pop(key, None)
        while len(self._entries) >= self._max_entries:
            del self._entries[next(iter(self._entries))]
        self._entries[key] = (self._clock() + answer.ttl, answer)

    def __len__(self) -> int:
        return len(self._entries)


class Resolver:
    """Turns a SIP URI into the ordered targets RFC 3263 §4 says to try.

    ``nameservers`` as (address, port) pairs sends every question there (and reads
    /etc/hosts first); without them DNS questions follow /etc/resolv.conf and host
    addresses come from the system resolver. ``transports`` are the ones this engine
    can send on; records for others are passed over. ``clock`` and ``rng`` are there
    so tests can age the cache and pin the weighted SRV order.
    """

    def __init__(
        self,
        nameservers: Sequence[tuple[str, int]] | None = None,
        *,
        timeout: float = 2.0,
        transports: frozenset[str] = frozenset({"udp", "tcp", "tls"}),
        max_cached: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._nameservers = tuple(nameservers or ())
        self._timeout = timeout
        self._transports = transports
        self._cache = _TtlCache(max_cached, clock)
        self._rng = rng or random.Random()
        self._hosts = read_hosts(HOSTS_PATH)
        self._dns: dns.asyncresolver.Resolver | None = None

    @property
    def cached_answers(self) -> int:
        """How many answers the cache holds right now."""
        return len(self._cache)

    async def resolve(self, uri: SipUri, default_transport: str = "udp") -> Resolution:
        """Every target for ``uri``, best first; raises only :class:`ResolutionError`."""
        name = _name_of(uri)
        steps: list[str] = []
        try:
            targets = await self._locate(uri, name, default_transport.lower(), steps)
        except ResolutionError:
            raise
        except Exception as exc:  # the promise to callers: a reason, never a crash
            log.exception("resolving %s", uri)
            raise ResolutionError(name, f"lookup failed ({exc!r})", steps) from exc
        return Resolution(name, tuple(dict.fromkeys(targets)), tuple(steps))

    # -- RFC 3263 §4.1 and §4.2: transport, then port and addresses -------------

    async def _locate(
        self, uri: SipUri, name: str, default_transport: str, steps: list[str]
    ) -> list[Target]:
        """RFC 3263 §4: the first rule that applies decides how much DNS is needed."""
        explicit, fallback = self._transport_choice(uri, name, default_transport)
        if is_ip_address(name):
            steps.append(f"{name}: an IP address, no DNS")
            self._require(name, fallback)
            return [Target(fallback, name, uri.port or DEFAULT_PORTS[fallback])]
        if uri.port is not None:
            return await self._address_targets(name, fallback, uri.port, steps)
        if name in self._hosts:  # a local name: DNS has no SRV records for it
            return await self._address_targets(name, fallback, DEFAULT_PORTS[fallback], steps)
        if explicit is not None:
            return await self._srv_targets(name, [_service(explicit, name)], explicit, steps)
        return await self._discover(name, uri.secure, fallback, steps)

    async def _discover(
        self, name: str, secure: bool, fallback: str, steps: list[str]
    ) -> list[Target]:
        """No port, no transport: NAPTR names the services, else SRV for each transport."""
        allowed = {"tls"} & self._transports if secure else self._transports
        found = await self._naptr_services(name, allowed, steps)
        if found is None:  # the name does not exist: nothing to find under it either
            return await self._address_targets(name, fallback, DEFAULT_PORTS[fallback], steps)
        if found:
            return await self._srv_targets(name, found, found[0].transport, steps)
        guesses = [_service(t, name) for t in _SRV_SERVICES if t in allowed]
        return await self._srv_targets(name, guesses, fallback, steps)

    def _transport_choice(
        self, uri: SipUri, name: str, default_transport: str
    ) -> tuple[str | None, str]:
        """(the transport the URI fixes, or None; the one to use when DNS names none).

        What the URI demands must be enabled before any DNS; the default transport
        only once it is used, since NAPTR or SRV may lead elsewhere.
        """
        explicit = uri.transport
        if uri.secure:
            if explicit not in (None, "tcp", "tls"):
                raise ResolutionError(name, f"a sips: URI needs TLS, not {explicit}")
            self._require(name, "tls")
            return (None if explicit is None else "tls"), "tls"
        if explicit is not None:
            return explicit, self._require(name, explicit)
        if default_transport not in DEFAULT_PORTS:
            raise ResolutionError(name, f"transport {default_transport} is not supported")
        return None, default_transport

    def _require(self, name: str, transport: str) -> str:
        if transport not in DEFAULT_PORTS:
            raise ResolutionError(name, f"transport {transport} is not supported")
        if transport not in self._transports:
            raise ResolutionError(name, f"transport {transport} is not enabled")
        return transport

    async def _naptr_services(
        self, name: str, allowed: set[str] | frozenset[str], steps: list[str]
    ) -> list[_Service] | None:
        """The SRV names NAPTR points to, in order; [] when there is no say; None: no name."""
        answer: _Answer[_Naptr] = await self._query(name, "NAPTR")
        steps.append(_answer_line("NAPTR", name, answer, _naptr_text(answer.records, allowed)))
        if answer.failed:
            raise ResolutionError(name, answer.problem or UNREADABLE, steps)
        if answer.problem == NO_SUCH_NAME:
            return None
        ranked = sorted(answer.records, key=lambda r: (r.order, r.preference))
        leads = [(_naptr_transport(r), r.replacement) for r in ranked]
        return [_Service(t, srv_name) for t, srv_name in leads if t is not None and t in allowed]

    async def _srv_targets(
        self, name: str, services: list[_Service], fallback: str, steps: list[str]
    ) -> list[Target]:
        """SRV for each service, then each server's addresses; none at all: the name's own."""
        answers: list[_Answer[SrvRecord]] = list(
            await asyncio.gather(*(self._query(s.srv_name, "SRV") for s in services))
        )
        servers: list[tuple[str, SrvRecord]] = []
        for service, answer in zip(services, answers, strict=True):
            ordered = order_srv(answer.records, self._rng)
            steps.append(_answer_line("SRV", service.srv_name, answer, _srv_text(ordered)))
            servers += [(service.transport, r) for r in ordered if _offered(r)]
        if any(answer.records for answer in answers):
            return await self._server_targets(name, servers, steps)
        _raise_failure(name, answers, steps)
        port = DEFAULT_PORTS[fallback]
        steps.append(f"no SRV records: the addresses of {name} on port {port} ({fallback})")
        return await self._address_targets(name, fallback, port, steps)

    async def _server_targets(
        self, name: str, servers: list[tuple[str, SrvRecord]], steps: list[str]
    ) -> list[Target]:
        """Every address of every SRV server, in SRV order, each one a target."""
        hosts = list(dict.fromkeys(record.target for _, record in servers))[:_MAX_SERVER_HOSTS]
        found = dict(zip(hosts, await asyncio.gather(*map(self._addresses, hosts)), strict=True))
        for host in hosts:
            steps.extend(found[host].lines)
        targets = [
            Target(transport, address, record.port)
            for transport, record in servers
            if record.target in found
            for address in found[record.target].addresses
        ]
        if not targets:
            failures = [a for a in found.values() if a.failed]
            reason = failures[0].problem if failures else NO_SIP_SERVER
            raise ResolutionError(name, reason or NO_SIP_SERVER, steps)
        return targets

    async def _address_targets(
        self, name: str, transport: str, port: int, steps: list[str]
    ) -> list[Target]:
        self._require(name, transport)
        found = await self._addresses(name)
        steps.extend(found.lines)
        if not found.addresses:
            reason = found.problem if found.problem != NO_RECORDS else NO_SIP_SERVER
            raise ResolutionError(name, reason or NO_SIP_SERVER, steps)
        return [Target(transport, address, port) for address in found.addresses]

    # -- addresses: /etc/hosts, then DNS or the system resolver ------------------

    async def _addresses(self, host: str) -> _Addresses:
        """A then AAAA addresses of ``host``: /etc/hosts before our nameservers, or the
        system resolver (which reads /etc/hosts itself, and sees it change)."""
        if not self._nameservers:
            return await self._system_addresses(host)
        if host in self._hosts:
            known = self._hosts[host]
            return _Addresses(known, (f"hosts {host}: {', '.join(known)}",))
        answers: list[_Answer[str]] = list(
            await asyncio.gather(self._query(host, "A"), self._query(host, "AAAA"))
        )
        lines = tuple(
            _answer_line(rdtype, host, answer, ", ".join(answer.records), ttl=True)
            for rdtype, answer in zip(("A", "AAAA"), answers, strict=True)
        )
        addresses = tuple(address for answer in answers for address in answer.records)
        if addresses:
            return _Addresses(addresses, lines)
        failed = [answer for answer in answers if answer.failed]
        problems = [answer.problem for answer in failed or answers]
        problem = NO_SUCH_NAME if NO_SUCH_NAME in problems else problems[0]
        return _Addresses((), lines, problem, failed=bool(failed))

    async def _system_addresses(self, host: str) -> _Addresses:
        """getaddrinfo in the loop's executor: /etc/hosts, DNS, whatever nsswitch says."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._timeout):
                infos = await loop.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
        except TimeoutError:
            return _system_failure(host, self._timeout_reason(), failed=True)
        except socket.gaierror as exc:
            return _system_failure(host, *self._gai_problem(exc))
        except (OSError, UnicodeError, ValueError) as exc:
            return _system_failure(host, f"address lookup failed ({exc})", failed=True)
        by_family: dict[str, list[str]] = {"A": [], "AAAA": []}
        for family, *_, sockaddr in infos:
            rdtype = "AAAA" if family == socket.AF_INET6 else "A"
            if str(sockaddr[0]) not in by_family[rdtype]:
                by_family[rdtype].append(str(sockaddr[0]))
        lines = tuple(
            f"{rdtype} {host}: {', '.join(found)} (system resolver)"
            for rdtype, found in by_family.items()
            if found
        )
        addresses = tuple(str(sockaddr[0]) for *_, sockaddr in infos)
        return _Addresses(tuple(dict.fromkeys(addresses)), lines)

    def _gai_problem(self, exc: socket.gaierror) -> tuple[str, bool]:
        """(reason, failed) for a getaddrinfo error code."""
        if exc.errno == socket.EAI_NONAME:
            return NO_SUCH_NAME, False
        if exc.errno == getattr(socket, "EAI_NODATA", None):
            return NO_RECORDS, False
        if exc.errno == socket.EAI_AGAIN:
            return self._timeout_reason(), True
        return f"address lookup failed ({exc.strerror})", True

    # -- one DNS question, cached ------------------------------------------------

    async def _query(self, name: str, rdtype: str) -> _Answer[Any]:
        for key in ((name, _NXDOMAIN), (name, rdtype)):
            hit = self._cache.get(key)
            if hit is not None:
                return hit
        answer = await self._ask(name, rdtype)
        if not answer.failed:
            key = (name, _NXDOMAIN) if answer.problem == NO_SUCH_NAME else (name, rdtype)
            self._cache.put(key, answer)
        return answer

    async def _ask(self, name: str, rdtype: str) -> _Answer[Any]:
        """Put one question to DNS; every dnspython outcome becomes an :class:`_Answer`."""
        try:
            qname = dns.name.from_text(name)
        except dns.exception.DNSException:
            return _Answer(problem="not a valid DNS name", failed=True)
        try:
            resolver = self._dns_resolver()
            async with asyncio.timeout(self._timeout):  # its retry back-off can overrun lifetime
                answer = await resolver.resolve(qname, rdtype, search=False)
            records = tuple(_read_record(rdata) for rdata in answer)
        except dns.resolver.NXDOMAIN as exc:
            responses = cast(dict[Any, dns.message.Message], exc.kwargs.get("responses") or {})
            return _Answer(problem=NO_SUCH_NAME, ttl=_negative_ttl(responses.values()))
        except dns.resolver.NoAnswer as exc:
            response = cast(dns.message.Message | None, exc.kwargs.get("response"))
            return _Answer(problem=NO_RECORDS, ttl=_negative_ttl([response] if response else []))
        except dns.resolver.NoResolverConfiguration:
            return _Answer(problem="no DNS server configured", failed=True)
        except (dns.exception.Timeout, TimeoutError):
            return _Answer(problem=self._timeout_reason(), failed=True)
        except dns.resolver.NoNameservers as exc:
            return _Answer(problem=self._server_problem(exc), failed=True)
        except (dns.exception.DNSException, ValueError, EOFError):
            return _Answer(problem=UNREADABLE, failed=True)
        except OSError as exc:
            return _Answer(problem=_unreachable(exc), failed=True)
        return _Answer(records, ttl=answer.chaining_result.minimum_ttl)

    def _dns_resolver(self) -> dns.asyncresolver.Resolver:
        """Built on first use: /etc/resolv.conf is read only when DNS is really needed."""
        if self._dns is None:
            if self._nameservers:
                resolver = dns.asyncresolver.Resolver(configure=False)
                resolver.nameservers = [
                    dns.nameserver.Do53Nameserver(host, port) for host, port in self._nameservers
                ]
            else:
                resolver = dns.asyncresolver.Resolver()
            resolver.timeout = self._timeout / 2  # room for one retransmission per question
            resolver.lifetime = self._timeout
            resolver.use_edns(0, 0, _EDNS_PAYLOAD)
            self._dns = resolver
        return self._dns

    def _server_problem(self, exc: dns.resolver.NoNameservers) -> str:
        """The last nameserver's complaint: an rcode, an unreadable answer, no route."""
        errors = cast(list[tuple[Any, ...]], exc.kwargs.get("errors") or [])
        if not errors:
            return self._timeout_reason()
        complaint = errors[-1][3]
        if isinstance(complaint, str):
            return f"the DNS server answered {complaint}"
        if isinstance(complaint, dns.exception.Timeout):
            return self._timeout_reason()
        if isinstance(complaint, OSError):
            return _unreachable(complaint)
        return UNREADABLE

    def _timeout_reason(self) -> str:
        return f"the DNS server did not answer within {self._timeout:g}s"


# -- small helpers: names, records, step lines ------------------------------------


def order_srv(records: Iterable[SrvRecord], rng: random.Random) -> list[SrvRecord]:
    """RFC 2782 order: priority ascending; within a priority, a weighted random draw.

    Weight-0 records go to the front of each draw, so they are picked only when the
    draw lands on 0: rarely while weighted records remain, as the RFC intends.
    """
    pending = list(records)
    ordered: list[SrvRecord] = []
    for priority in sorted({record.priority for record in pending}):
        group = sorted((r for r in pending if r.priority == priority), key=lambda r: r.weight > 0)
        while group:
            ordered.append(group.pop(_weighted_pick(group, rng)))
    return ordered


def _weighted_pick(group: list[SrvRecord], rng: random.Random) -> int:
    draw = rng.randint(0, sum(record.weight for record in group))
    running = 0
    for index, record in enumerate(group):
        running += record.weight
        if running >= draw:
            return index
    return len(group) - 1


def parse_hosts(text: str) -> dict[str, tuple[str, ...]]:
    """/etc/hosts text as {lower-case name: addresses in file order}; junk lines are skipped."""
    table: dict[str, list[str]] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2 or not is_ip_address(fields[0].split("%", 1)[0]):
            continue
        for alias in fields[1:]:
            known = table.setdefault(alias.lower().rstrip("."), [])
            if fields[0] not in known:
                known.append(fields[0])
    return {name: tuple(addresses) for name, addresses in table.items()}


def read_hosts(path: Path) -> dict[str, tuple[str, ...]]:
    """The hosts table, read once; ``localhost`` is loopback even if the file forgets it
    (RFC 6761 §6.3), so ``sip:human@localhost:5080`` works on any machine."""
    try:
        table = parse_hosts(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        table = {}
    table.setdefault("localhost", ("127.0.0.1",))
    return table


def _name_of(uri: SipUri) -> str:
    """The name to look up: ``maddr`` wins over the host (RFC 3263 §4)."""
    name = uri.param("maddr") or uri.bare_host
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    return name.lower().rstrip(".")


def _service(transport: str, name: str) -> _Service:
    return _Service(transport, f"{_SRV_SERVICES[transport]}.{name}")


def _naptr_transport(record: _Naptr) -> str | None:
    """The transport a NAPTR record leads to, or None when it is no SIP SRV pointer."""
    if record.flags.lower() != "s" or record.regexp or record.replacement in ("", "."):
        return None
    return _NAPTR_SERVICES.get(record.service.upper())


def _offered(record: SrvRecord) -> bool:
    """A target of "." says the service is decidedly not available (RFC 2782)."""
    return record.target not in ("", ".") and record.port > 0


def _read_record(rdata: dns.rdata.Rdata) -> SrvRecord | _Naptr | str:
    if isinstance(rdata, dns.rdtypes.IN.SRV.SRV):
        return SrvRecord(rdata.priority, rdata.weight, rdata.port, _dns_name_text(rdata.target))
    if isinstance(rdata, dns.rdtypes.IN.NAPTR.NAPTR):
        return _Naptr(
            rdata.order,
            rdata.preference,
            _ascii(rdata.flags),
            _ascii(rdata.service),
            _ascii(rdata.regexp),
            _dns_name_text(rdata.replacement),
        )
    if isinstance(rdata, dns.rdtypes.IN.A.A | dns.rdtypes.IN.AAAA.AAAA):
        return str(rdata.address)
    raise ValueError(f"unexpected {dns.rdatatype.to_text(rdata.rdtype)} record")


def _ascii(field: bytes) -> str:
    return field.decode("ascii", "replace")


def _dns_name_text(name: dns.name.Name) -> str:
    return "." if name == dns.name.root else name.to_text(omit_final_dot=True).lower()


def _negative_ttl(responses: Iterable[dns.message.Message]) -> int:
    """How long a negative answer holds: the SOA's minimum (RFC 2308), or a few seconds."""
    for response in responses:
        for rrset in response.authority:
            if rrset.rdtype == dns.rdatatype.SOA and len(rrset):
                return int(min(rrset.ttl, getattr(rrset[0], "minimum", rrset.ttl)))
    return NEGATIVE_TTL


def _unreachable(exc: OSError) -> str:
    return f"the DNS server could not be reached ({exc.strerror or exc})"


def _raise_failure(name: str, answers: Iterable[_Answer[Any]], steps: list[str]) -> None:
    """A failed question hides what its answer would have been: do not guess past it."""
    for answer in answers:
        if answer.failed:
            raise ResolutionError(name, answer.problem or UNREADABLE, steps)


def _system_failure(host: str, problem: str, failed: bool) -> _Addresses:
    return _Addresses((), (f"A/AAAA {host}: {problem} (system resolver)",), problem, failed)


def _answer_line(
    rdtype: str, name: str, answer: _Answer[Any], text: str, *, ttl: bool = False
) -> str:
    """'A a.pbx.test: 127.0.0.2 (ttl 300)', 'SRV ...: no records (cached)'."""
    notes = [f"ttl {answer.ttl}"] if ttl and answer.problem is None else []
    notes += ["cached"] if answer.cached else []
    body = text if answer.problem is None else answer.problem
    return f"{rdtype} {name}: {body}" + (f" ({', '.join(notes)})" if notes else "")


def _srv_text(ordered: Sequence[SrvRecord]) -> str:
    return ", ".join(f"{r.priority} {r.weight} {r.port} {r.target}" for r in ordered)


def _naptr_text(records: Sequence[_Naptr], allowed: set[str] | frozenset[str]) -> str:
    """'SIP+D2U -> _sip._udp.pbx.test (order 10, pref 10)', with passed-over services last."""
    records = sorted(records, key=lambda r: (r.order, r.preference))
    used = [r for r in records if _naptr_transport(r) in allowed]
    text = ", ".join(
        f"{r.service} -> {r.replacement} (order {r.order}, pref {r.preference})" for r in used
    )
    passed_over = [r.service or "(no service)" for r in records if r not in used]
    if passed_over:
        text += ("; " if text else "no usable SIP service; ") + "passed over " + ", ".join(
            passed_over
        )
    return text

