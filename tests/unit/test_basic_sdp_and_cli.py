"""The SIP-only answerer's SDP answer and the command line's error messages."""

from __future__ import annotations

import re

import pytest

from warmline.cli import main
from warmline.media.basic_sdp import answer_audio, offer_audio
from warmline.transport.listen import ListenSpec, ListenSpecError, parse_listen

OFFER = (
    b"v=0\r\no=caller 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n"
    b"m=audio 49170 RTP/AVP 9 8 0 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"
    b"m=video 51372 RTP/AVP 31\r\n"
)


def test_answer_takes_the_offerers_first_supported_codec_and_rejects_video() -> None:
    answer = answer_audio(OFFER, "127.0.0.1", 40000, 7).decode()  # type: ignore[union-attr]
    lines = answer.split("\r\n")
    assert "m=audio 40000 RTP/AVP 8 101" in lines
    assert "a=rtpmap:8 PCMA/8000" in lines and "a=fmtp:101 0-15" in lines
    assert "m=video 0 RTP/AVP 31" in lines  # same number of m-lines, video refused
    assert "c=IN IP4 127.0.0.1" in lines


def test_no_common_codec_means_no_answer() -> None:
    only_g722 = OFFER.replace(b"9 8 0 101", b"9").replace(b"m=video 51372", b"m=video 0")
    assert answer_audio(only_g722, "127.0.0.1", 40000, 1) is None
    assert answer_audio(b"m=audio notaport RTP/AVP 0\r\n", "127.0.0.1", 40000, 1) is None


def test_offer_for_invites_without_sdp() -> None:
    offer = offer_audio("::1", 40002, 3).decode()
    assert "c=IN IP6 ::1" in offer and "m=audio 40002 RTP/AVP 0 8 101" in offer


@pytest.mark.parametrize("text", ["udp:127.0.0.1:5070", "tcp:[::1]:0", "TLS:10.0.0.1:5061"])
def test_listen_specs(text: str) -> None:
    spec = parse_listen(text)
    assert isinstance(spec, ListenSpec) and spec.transport in ("udp", "tcp", "tls")


@pytest.mark.parametrize("text", ["sctp:127.0.0.1:5060", "udp:localhost:5060",
                                  "udp:127.0.0.1:99999", "udp:127.0.0.1"])
def test_bad_listen_specs_name_the_flag(text: str) -> None:
    with pytest.raises(ListenSpecError, match="--sip"):
        parse_listen(text)


def test_cli_rejects_bad_flags_with_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["serve", "--sip", "udp:nohost:5060"])
    assert exited.value.code == 2
    assert "--sip 'udp:nohost:5060'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--sip", "tls:127.0.0.1:5061"])
    assert "--tls-cert" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--http", "localhost"])
    assert "--http 'localhost': expected HOST:PORT" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["serve", "--media-ports", "30000-20000"])
    assert "--media-ports '30000-20000'" in capsys.readouterr().err


def test_cli_reports_a_missing_certificate_file(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["serve", "--sip", "tls:127.0.0.1:0", "--tls-cert", "/nonexistent.pem",
                 "--tls-key", "/nonexistent.key"])
    assert code == 1
    assert "cannot start" in capsys.readouterr().err


def test_json_logs_carry_the_ids() -> None:
    import json
    import logging

    from warmline.logs import JsonFormatter

    record = logging.LogRecord("warmline.calls", logging.INFO, __file__, 1,
                               "handoff %s done", ("handoff-3",), None)
    record.call_id, record.handoff_id = "call-2", "handoff-3"
    line = json.loads(JsonFormatter().format(record))
    assert line["msg"] == "handoff handoff-3 done" and line["level"] == "info"
    assert (line["call_id"], line["handoff_id"]) == ("call-2", "handoff-3")
    assert line["ts"].endswith("Z")


@pytest.mark.parametrize(("text", "public"), [
    ("udp:0.0.0.0:5060;advertise=203.0.113.7", ("203.0.113.7", 5060)),
    ("tcp:[::1]:5060;advertise=[2001:db8::1]:5080", ("2001:db8::1", 5080)),
    ("udp:127.0.0.1:5060;advertise=sip.example.com:5062", ("sip.example.com", 5062)),
])
def test_a_listener_may_advertise_another_address(text: str, public: tuple[str, int]) -> None:
    spec = parse_listen(text)
    assert spec.public == public and str(parse_listen(str(spec))) == str(spec)


@pytest.mark.parametrize(("text", "problem"), [
    ("udp:127.0.0.1:5060;advertise=", "options are ;advertise=HOST[:PORT] and ;access="),
    ("udp:127.0.0.1:5060;via=1.2.3.4", "options are ;advertise=HOST[:PORT] and ;access="),
    ("udp:127.0.0.1:5060;advertise=bad_host!", "advertise needs an IP address or a host name"),
    ("udp:127.0.0.1:5060;advertise=1.2.3.4:99999", "advertised port must be 1-65535"),
])
def test_a_bad_advertised_address_is_refused_naming_it(text: str, problem: str) -> None:
    with pytest.raises(ListenSpecError, match=re.escape(problem)):
        parse_listen(text)
