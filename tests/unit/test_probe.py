"""`warmline probe`, the pure parts: reading an OPTIONS exchange, the SDP answer's codecs,
routes, the exit status and its order, and the command's usage errors (exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from warmline.calls.trunks import Trunk, Trunks
from warmline.cli import main
from warmline.probe import (
    EXIT_DNS,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    AuthOutcome,
    CallCheck,
    DnsCheck,
    OptionsCheck,
    ProbeReport,
    render_json,
    render_text,
)
from warmline.probe.checks import Seen, answer_codecs, read_options
from warmline.probe.run import ProbeUsageError, choose_route
from warmline.sip.auth import Credentials
from warmline.sip.message import Response, parse_message
from warmline.sip.uri import parse_sip_uri

TARGET = "udp:127.0.0.1:5080"


def options_request(cseq: int = 1, authorization: str | None = None) -> bytes:
    auth = f"Authorization: {authorization}\r\n" if authorization else ""
    return (f"OPTIONS sip:human@127.0.0.1:5080 SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{cseq}\r\n"
            "From: <sip:warmline@127.0.0.1:5999>;tag=a\r\nTo: <sip:human@127.0.0.1:5080>\r\n"
            f"Call-ID: probe-1\r\nCSeq: {cseq} OPTIONS\r\n{auth}Content-Length: 0\r\n\r\n"
            ).encode()


def answer(status: int, reason: str, cseq: int = 1, extra: str = "") -> bytes:
    return (f"SIP/2.0 {status} {reason}\r\n"
            f"Via: SIP/2.0/UDP 127.0.0.1:5999;branch=z9hG4bK{cseq}\r\n"
            "From: <sip:warmline@127.0.0.1:5999>;tag=a\r\nTo: <sip:human@127.0.0.1:5080>;tag=b\r\n"
            f"Call-ID: probe-1\r\nCSeq: {cseq} OPTIONS\r\n{extra}Content-Length: 0\r\n\r\n"
            ).encode()


def response(data: bytes) -> Response:
    message = parse_message(data)
    assert isinstance(message, Response)
    return message


CAPABLE = ("Allow: INVITE, ACK, BYE, CANCEL, OPTIONS, REFER, NOTIFY\r\n"
           "Supported: replaces, timer\r\nServer: pbx/1.0\r\n")
CHALLENGE = 'WWW-Authenticate: Digest realm="pbx.test", nonce="n1", qop="auth"\r\n'
ANSWERED = 'Digest username="alice", realm="pbx.test", nonce="n1", uri="sip:x", response="r"'


def test_an_answer_says_what_the_far_end_can_do_and_how_fast() -> None:
    final = answer(200, "OK", extra=CAPABLE)
    check = read_options(TARGET, [Seen("out", 10.0, options_request()),
                                  Seen("in", 10.0042, final)], 200, "OK", response(final))
    assert check.ok and check.rtt_ms == pytest.approx(4.2)
    assert "REFER" in check.allow and check.supported == ("replaces", "timer")
    assert check.features == {"REFER": True, "Replaces": True, "timer": True, "100rel": False}
    assert check.auth is AuthOutcome.NOT_CHALLENGED and not check.challenged
    assert check.server == "pbx/1.0"


def test_a_challenge_answered_and_let_through_is_accepted() -> None:
    final = answer(200, "OK", cseq=2, extra=CAPABLE)
    exchange = [Seen("out", 1.0, options_request()), Seen("in", 1.01, answer(401, "Unauthorized",
                                                                             extra=CHALLENGE)),
                Seen("out", 1.02, options_request(2, ANSWERED)), Seen("in", 1.03, final)]
    check = read_options(TARGET, exchange, 200, "OK", response(final))
    assert check.challenged and check.auth is AuthOutcome.ACCEPTED
    assert check.realm == "pbx.test" and check.rtt_ms == pytest.approx(10.0)


def test_a_second_challenge_after_our_answer_is_an_auth_failure() -> None:
    final = answer(401, "Unauthorized", cseq=2, extra=CHALLENGE)
    exchange = [Seen("out", 1.0, options_request()),
                Seen("in", 1.01, answer(401, "Unauthorized", extra=CHALLENGE)),
                Seen("out", 1.02, options_request(2, ANSWERED)), Seen("in", 1.03, final)]
    check = read_options(TARGET, exchange, 401, "Unauthorized", response(final))
    assert check.auth is AuthOutcome.REJECTED
    report = ProbeReport("sip:human@pbx.test", options=check)
    assert report.exit_code == EXIT_FAILED and report.verdict.startswith("auth failed")
    assert set(check.features.values()) == {None}  # a 401 says nothing about features


def test_a_challenge_without_credentials_to_answer_it() -> None:
    final = answer(407, "Proxy Authentication Required",
                   extra='Proxy-Authenticate: Digest realm="edge", nonce="n"\r\n')
    check = read_options(TARGET, [Seen("out", 1.0, options_request()), Seen("in", 1.1, final)],
                         407, "Proxy Authentication Required", response(final))
    assert check.auth is AuthOutcome.NO_CREDENTIALS and check.realm == "edge"


def test_no_answer_leaves_every_feature_unknown() -> None:
    check = read_options(TARGET, [Seen("out", 1.0, options_request()),
                                  Seen("in", 1.2, b"garbage")], 408, "no answer within 1 s", None)
    assert check.rtt_ms is None and check.status == 408
    assert set(check.features.values()) == {None}


def test_the_answers_codecs_by_name_static_or_mapped() -> None:
    sdp = (b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
           b"m=audio 4000 RTP/AVP 8 0 18 101\r\na=rtpmap:101 telephone-event/8000\r\n"
           b"m=video 0 RTP/AVP 96\r\n")
    assert answer_codecs(sdp) == ("PCMA", "PCMU", "G729", "telephone-event")
    assert answer_codecs(b"not sdp") == () and answer_codecs(None) == ()
    unnumbered = sdp.replace(b"a=rtpmap:101", b"a=rtpmap: PCMU/8000\r\na=rtpmap:101")
    assert answer_codecs(unnumbered) == ("PCMA", "PCMU", "G729", "telephone-event")
    odd = sdp.replace(b"8 0 18 101", "8 \u00b2 ".encode() + b"1" * 4301)
    assert answer_codecs(odd) == ("PCMA", "\u00b2", "1" * 4301)


OK_OPTIONS = OptionsCheck(TARGET, 200, "OK", 1.5)


@pytest.mark.parametrize(("report", "code", "verdict"), [
    (ProbeReport("x", problem="bad"), EXIT_USAGE, "usage: bad"),
    (ProbeReport("x", dns=DnsCheck("pbx.test", reason="no such name")), EXIT_DNS,
     "DNS: pbx.test: no such name"),
    (ProbeReport("x", options=OptionsCheck(TARGET, 403, "Forbidden", 2.0)), EXIT_FAILED,
     "OPTIONS: 403 Forbidden"),
    (ProbeReport("x", options=OptionsCheck(TARGET, 408, "no answer", None)), EXIT_FAILED,
     "OPTIONS: 408 no answer"),
    (ProbeReport("x", options=OK_OPTIONS), EXIT_OK, "reachable: 200 OK"),
    (ProbeReport("x", True, options=OK_OPTIONS, call=CallCheck(486, "Busy Here")), EXIT_FAILED,
     "call not answered: 486 Busy Here"),
    (ProbeReport("x", True, options=OK_OPTIONS, call=CallCheck(200, "OK", True, codec="PCMU")),
     EXIT_FAILED, "call answered, but no audio came back"),
    (ProbeReport("x", True, options=OK_OPTIONS,
                 call=CallCheck(200, "OK", True, codec="PCMU", packets_received=40)),
     EXIT_OK, "reachable; call answered with PCMU, audio came back"),
])
def test_the_exit_status_follows_the_first_step_that_failed(report: ProbeReport, code: int,
                                                            verdict: str) -> None:
    assert (report.exit_code, report.verdict) == (code, verdict)
    data = json.loads(render_json(report))
    assert (data["exit_code"], data["verdict"]) == (code, verdict)
    assert render_text(report).endswith(f"{verdict} (exit {code})")


PBX = Trunk("pbx", parse_sip_uri("sip:pbx.test"), Credentials("alice", "s3cret"))
CARRIER = Trunk("carrier", parse_sip_uri("sip:sip.carrier.test"),
                outbound_proxy=parse_sip_uri("sip:edge.carrier.test:5070"),
                destinations=("tel:*",))


def test_routes_by_name_by_the_first_trunk_serving_it_or_directly() -> None:
    trunks = Trunks((PBX, CARRIER))
    number = choose_route("tel:+1-555-0199", trunks, None)
    assert number.trunk is CARRIER and str(number.next_hop) == "sip:edge.carrier.test:5070"
    assert str(number.request_uri) == "sip:+15550199@sip.carrier.test;user=phone"
    assert choose_route("sip:agent@pbx.test", trunks, None).trunk is PBX
    forced = choose_route("sip:agent@elsewhere.test", trunks, "pbx")
    assert forced.trunk is PBX and str(forced.next_hop) == "sip:pbx.test"
    assert choose_route("sip:human@127.0.0.1:5080", trunks, None).trunk is None


@pytest.mark.parametrize(("destination", "trunk", "problem"), [
    ("tel:+15550199", None, "a tel: number needs a trunk"),
    ("sip:agent@pbx.test", "nope", "no trunk named 'nope' (configured: pbx, carrier)"),
    ("http://example.com", None, "must be a sip:, sips: or tel: URI"),
    ("sip:agent@pbx.test?Subject=hi", None, "carries URI headers (Subject)"),
])
def test_what_cannot_be_probed_is_a_usage_problem(destination: str, trunk: str | None,
                                                 problem: str) -> None:
    trunks = Trunks((PBX, CARRIER)) if trunk else Trunks()
    with pytest.raises(ProbeUsageError, match=problem.replace("(", r"\(").replace(")", r"\)")
                       .replace("?", r"\?")):
        choose_route(destination, trunks, trunk)


def test_usage_errors_exit_2_with_the_reason(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["probe", "tel:+15550199"]) == EXIT_USAGE
    assert "a tel: number needs a trunk" in capsys.readouterr().out
    broken = tmp_path / "warmline.toml"
    broken.write_text("[trunks.pbx]\nuri = 'not a uri'\n")
    assert main(["probe", "sip:a@127.0.0.1", "--config", str(broken), "--json"]) == EXIT_USAGE
    data = json.loads(capsys.readouterr().out)
    assert data["exit_code"] == EXIT_USAGE and "trunks.pbx.uri" in data["problem"]
    assert main(["probe", "sip:a@127.0.0.1", "--sip", "udp:nowhere:0"]) == EXIT_USAGE
    assert "host must be an IP address" in capsys.readouterr().out
    assert main(["probe", "sip:a@127.0.0.1", "--sip", "tcp:127.0.0.1:0"]) == EXIT_USAGE
    assert "the probe listens on udp" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stopped:
        main(["probe", "sip:a@127.0.0.1", "--timeout", "0"])
    assert stopped.value.code == EXIT_USAGE


def test_the_help_documents_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["probe", "--help"])
    text = capsys.readouterr().out
    for line in ("0  reachable and OK", "1  reachable but refused", "2  usage error",
                 "3  DNS failure"):
        assert line in text
