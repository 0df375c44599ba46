"""A probe report for a person (aligned sections) or for a script (one JSON object).

Only what the report holds is printed; credentials never reach it (a trunk
is named, its account is not), so no password can be printed.
"""

from __future__ import annotations

import json

from warmline.probe.checks import CallCheck, DnsCheck, OptionsCheck, ProbeReport

_WIDTH = 10  # the section label column


def render(report: ProbeReport, as_json: bool = False) -> str:
    return render_json(report) if as_json else render_text(report)


def render_json(report: ProbeReport) -> str:
    return json.dumps(report.as_dict(), indent=2)


def render_text(report: ProbeReport) -> str:
    lines = [f"warmline probe {report.destination}"]
    if report.request_uri is not None:
        lines += _section("route", _route_lines(report))
    if report.dns is not None:
        lines += _section("DNS", _dns_lines(report.dns))
    if report.options is not None:
        lines += _section("OPTIONS", _options_lines(report.options, report.local))
    if report.call is not None:
        lines += _section("call", _call_lines(report.call))
    lines += _section("result", [f"{report.verdict} (exit {report.exit_code})"])
    return "\n".join(lines)


def _section(label: str, body: list[str]) -> list[str]:
    return [f"  {label if n == 0 else '':<{_WIDTH}}{line}" for n, line in enumerate(body)]


def _route_lines(report: ProbeReport) -> list[str]:
    via = f"trunk {report.trunk}" if report.trunk else "direct (no trunk)"
    lines = [f"{via}: next hop {report.next_hop}"]
    if report.request_uri != report.destination:
        lines.append(f"Request-URI {report.request_uri}")
    return lines


def _dns_lines(dns: DnsCheck) -> list[str]:
    lines = list(dns.steps)
    if dns.ok:
        lines.append(f"targets: {', '.join(dns.targets)}")
    else:
        lines.append(f"failed: {dns.name}: {dns.reason}")
    return lines


def _options_lines(options: OptionsCheck, local: str | None) -> list[str]:
    rtt = f" in {options.rtt_ms:g} ms" if options.rtt_ms is not None else ""
    lines = [f"{options.status} {options.reason}{rtt} from {options.target}"
             + (f" (we sent from {local})" if local else "")]
    if options.server:
        lines.append(f"server: {options.server}")
    if options.allow or options.ok:
        lines.append(f"Allow: {', '.join(options.allow) or '(none listed)'}")
    if options.supported or options.ok:
        lines.append(f"Supported: {', '.join(options.supported) or '(none listed)'}")
    if options.rtt_ms is not None:
        lines.append("   ".join(f"{name} {_yes_no(value)}"
                                for name, value in options.features.items()))
    auth = f"auth: {options.auth}"
    if options.realm:
        auth += f" (realm {options.realm})"
    lines.append(auth)
    return lines


def _call_lines(call: CallCheck) -> list[str]:
    progress = ", ".join(str(status) for status in call.progress)
    head = f"{call.status} {call.reason}"
    if call.answer_ms is not None:
        head += f" after {call.answer_ms:g} ms"
    if progress:
        head += f" (progress: {progress})"
    lines = [head]
    if call.answered:
        lines.append(f"answer codecs: {', '.join(call.codecs) or '(none)'}; "
                     f"using {call.codec or '(none)'}")
        lines.append(f"sent {call.tone_ms} ms of 1 kHz tone ({call.packets_sent} packets); "
                     f"received {call.packets_received} RTP packets from the far end")
    if call.problem:
        lines.append(f"problem: {call.problem}")
    lines.append(f"ended: {call.ended}")
    return lines


def _yes_no(value: bool | None) -> str:
    return "unknown" if value is None else ("yes" if value else "no")
