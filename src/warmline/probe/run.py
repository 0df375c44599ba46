"""One probe from start to end: route, DNS, OPTIONS, the optional test call, one report.

The steps run in the order a transfer would meet them, and the first that
fails ends the probe with the reason: a destination no rule accepts or no
trunk serves is a usage problem (nothing is sent), a name DNS cannot resolve
stops before any SIP, and OPTIONS and the call each get their own bound
(``timeout``). Nothing here blocks the loop: DNS is the engine's async
resolver, SIP and RTP go through the shell and the relay.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass, field, replace

from warmline.calls.trunks import NoRoute, Route, Trunks
from warmline.probe.call import ShortCall
from warmline.probe.checks import DnsCheck, ProbeReport
from warmline.probe.line import ProbeLine, describe_target
from warmline.sip.events import Target
from warmline.sip.uri import SipUri
from warmline.transfer.handoff import destination_uri_problem
from warmline.transport.listen import ListenSpec
from warmline.transport.resolver import Resolution, ResolutionError, Resolver

DEFAULT_TIMEOUT = 4.0  # seconds per step: DNS, OPTIONS, the call's answer, its BYE


class ProbeUsageError(ValueError):
    """The probe cannot start: the message says what to change (exit status 2)."""


@dataclass(frozen=True)
class ProbeSettings:
    """What to probe and how; the command line (and warmline.toml) fill it in."""

    destination: str
    trunks: Trunks = field(default_factory=Trunks)
    trunk: str | None = None  # through this trunk; None: the first that serves it, if any
    call: bool = False
    timeout: float = DEFAULT_TIMEOUT
    listen: ListenSpec | None = None  # None: udp on the address that routes there, any port
    nameservers: tuple[tuple[str, int], ...] = ()  # None given: /etc/resolv.conf
    dns_timeout: float = 2.0  # per DNS question (the whole lookup is bounded by timeout)


async def run_probe(settings: ProbeSettings) -> ProbeReport:
    """Probe ``settings.destination``; every outcome, usage problems included, is a report."""
    report = ProbeReport(settings.destination, settings.call)
    try:
        route = choose_route(settings.destination, settings.trunks, settings.trunk)
        _check_listen(settings.listen)
    except ProbeUsageError as error:
        return replace(report, problem=str(error))
    report = replace(report, request_uri=str(route.request_uri), next_hop=str(route.next_hop),
                     trunk=route.trunk.name if route.trunk else None)
    resolver = Resolver(settings.nameservers or None,
                        timeout=min(settings.dns_timeout, settings.timeout))
    dns, resolution = await locate(resolver, route.next_hop, settings.timeout)
    report = replace(report, dns=dns)
    if resolution is None:
        return report
    return await _exchange(report, settings, route, resolution, resolver)


def choose_route(destination: str, trunks: Trunks, trunk_name: str | None) -> Route:
    """How a call to ``destination`` would be placed: the named trunk, else the first
    that serves it, else directly (not for tel: numbers)."""
    problem = destination_uri_problem(destination)
    if problem is not None:
        raise ProbeUsageError(problem)
    if trunk_name is None:
        try:
            return trunks.route(destination)
        except NoRoute as error:
            raise ProbeUsageError(f"{error} (give --trunk NAME and --config FILE)") from None
    for trunk in trunks.trunks:
        if trunk.name == trunk_name:
            return Route(trunk.request_uri(destination), trunk.next_hop, trunk)
    known = ", ".join(trunk.name for trunk in trunks.trunks)
    raise ProbeUsageError(f"no trunk named {trunk_name!r} "
                          + (f"(configured: {known})" if known else "(no trunks configured)"))


def _check_listen(spec: ListenSpec | None) -> None:
    if spec is not None and spec.transport != "udp":
        raise ProbeUsageError(f"--sip {spec}: the probe listens on udp (it connects out "
                              "over tcp or tls when DNS says so)")


async def locate(resolver: Resolver, next_hop: SipUri, timeout: float
                 ) -> tuple[DnsCheck, Resolution | None]:
    """RFC 3263 for the next hop, bounded by ``timeout`` as a whole."""
    try:
        resolution = await asyncio.wait_for(resolver.resolve(next_hop), timeout)
    except ResolutionError as error:
        return DnsCheck(error.name, steps=error.steps, reason=error.reason), None
    except TimeoutError:
        return DnsCheck(next_hop.bare_host,
                        reason=f"DNS did not answer within {timeout:g} s"), None
    targets = tuple(describe_target(target) for target in resolution.targets)
    return DnsCheck(resolution.name, targets, resolution.steps), resolution


async def _exchange(report: ProbeReport, settings: ProbeSettings, route: Route,
                    resolution: Resolution, resolver: Resolver) -> ProbeReport:
    """OPTIONS to the first target, then (asked for, and something answered) the call."""
    target = resolution.targets[0]
    spec = settings.listen or ListenSpec("udp", local_address_towards(target), 0)
    try:
        line = await ProbeLine.open(spec, _media_address(spec, target), resolver)
    except OSError as error:
        return replace(report, problem=f"--sip {spec}: cannot listen: {error.strerror}")
    for each in resolution.targets:  # a TLS peer proves the URI's domain (RFC 5922)
        if each.transport == "tls":
            line.shell.tls_names[(each.host, each.port)] = route.next_hop.bare_host
    try:
        host, port = line.address.public
        report = replace(report, local=describe_target(Target("udp", host, port)))
        options = await line.options(route, target, settings.timeout)
        report = replace(report, options=options)
        if settings.call and options.rtt_ms is not None:
            call = await ShortCall(line, route, settings.timeout).run(resolution.targets)
            report = replace(report, call=call)
    finally:
        await line.close()
    return report


def local_address_towards(target: Target) -> str:
    """Our address on the route to ``target`` (a UDP connect sends nothing; no DNS)."""
    family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((target.host, target.port))
        except OSError:
            return "::" if family == socket.AF_INET6 else "0.0.0.0"
        return str(sock.getsockname()[0])


def _media_address(spec: ListenSpec, target: Target) -> str:
    """What the test call's SDP says: the advertised or bound address, never 0.0.0.0."""
    if spec.advertise_host is not None:
        return spec.advertise_host
    if ipaddress.ip_address(spec.host).is_unspecified:
        return local_address_towards(target)
    return spec.host
