"""warmline.toml: the example loads; every broken key is named with its line, all at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from warmline.cli import main
from warmline.config import ConfigError, load

EXAMPLE = Path(__file__).resolve().parents[2] / "warmline.example.toml"


def test_srtp_policies_reach_the_media_and_the_trunks(tmp_path: Path) -> None:
    from warmline.media.sdes import SrtpPolicy

    config = load(write(tmp_path, '[media]\nsrtp = "off"\n[trunks.teams]\n'
                                  'uri = "sip:sip.pstnhub.example"\nsrtp = "require"\n'
                                  '[trunks.pbx]\nuri = "sip:pbx.example"\n'))
    assert config.media.srtp == "off"
    teams, pbx = config.build_trunks().trunks
    assert teams.srtp is SrtpPolicy.REQUIRE and pbx.srtp is None


def test_the_commented_example_is_valid_and_builds_the_router() -> None:
    config = load(EXAMPLE)
    policy = config.escalation("http://127.0.0.1:8080")
    assert policy.router is not None and policy.router.default == "frontdesk"
    assert policy.triggers.per_intent["billing_dispute"]["confidence_threshold"] == 0.70
    assert policy.budget.uui_bytes == 128 and config.sip.listen[0] == "udp:127.0.0.1:5070"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "warmline.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "expected"), [
    ('[sip]\nlisten = ["udp:nohost:99999"]\n',
     "warmline.toml:2: sip.listen: Value error, --sip 'udp:nohost:99999': host must be an IP"),
    ('[triggers]\nconfidence_threshold = 1.5\n',
     "warmline.toml:2: triggers.confidence_threshold: Input should be less than or equal to 1"),
    ('[media]\nports = "10-20"\n', "warmline.toml:2: media.ports:"),
    ('[media]\ncodecs = ["PCMU", "G729"]\n', "warmline.toml:2: media.codecs.1:"),
    ('[media]\nsrtp = "maybe"\n', "warmline.toml:2: media.srtp: Input should be 'off', "),
    ('[media]\nplane = "freeswitch"\n',
     "warmline.toml:2: media.plane: Input should be 'embedded' or 'rtpengine'"),
    ('[media]\nplane = "rtpengine"\n', 'media: Value error, plane = "rtpengine" needs rtpengine'),
    ('[media]\nrtpengine = "127.0.0.1:2223"\n',
     "warmline.toml:2: media.rtpengine: Value error, '127.0.0.1:2223' is not udp:HOST:PORT"),
    ('[trunks.t]\nuri = "sip:t.example"\nsrtp = "yes"\n', "warmline.toml:3: trunks.t.srtp:"),
    ('[media]\nhold_audio = "/nonexistent/hold.wav"\n',
     "audio file not found: /nonexistent/hold.wav"),
    ('[context]\nwebhook = "ftp://x"\n', "warmline.toml:2: context.webhook:"),
    ('[sip]\nlisten = ["udp:127.0.0.1:5070"]\ncolour = "blue"\n',
     "warmline.toml:3: sip.colour: Extra inputs are not permitted"),
    ('[[departments]]\nname = "b"\ndestinations = [{ uri = "mailto:x@y" }]\n',
     "departments.b.destinations[0]: 'mailto:x@y' must be a sip:"),
    ('[[departments]]\nname = "b"\ndestinations = [{ uri = "sip:b@127.0.0.1" }]\n'
     '[departments.hours]\nzone = "Mars/Base"\n', "hours.zone: 'Mars/Base'"),
    ('[[departments]]\nname = "b"\ndestinations = [{ uri = "sip:b@127.0.0.1" }]\n'
     '[departments.hours]\nzone = "UTC"\nmon = ["9-17"]\n',
     "warmline.toml:6: departments.0.hours.mon: Value error, '9-17' is not HH:MM-HH:MM"),
    ('[routing]\ndefault = "nobody"\n[[departments]]\nname = "b"\n'
     'destinations = [{ uri = "sip:b@127.0.0.1" }]\n', "routing.default: no department"),
    ("[sip\n", "not valid TOML"),
    ("[trace]\nkeep_days = -1\n", "trace.keep_days"),
    ("[media]\nrelay_threads = -1\n",
     "warmline.toml:2: media.relay_threads: Input should be greater than or equal to 0"),
])
def test_problems_name_the_line_and_the_key(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as broken:
        load(write(tmp_path, text))
    assert expected in str(broken.value), str(broken.value)


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as broken:
        load(write(tmp_path, '[triggers]\nconfidence_turns = 0\nsmoothing = 3\n'))
    assert len(broken.value.problems) == 2


def test_config_check_and_a_broken_config_never_start_serve(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "check", str(EXAMPLE)]) == 0
    assert "ok" in capsys.readouterr().out
    broken = write(tmp_path, '[triggers]\nconfidence_threshold = "high"\n')
    assert main(["config", "check", str(broken)]) == 2
    assert "triggers.confidence_threshold" in capsys.readouterr().err
    assert main(["serve", "--config", str(broken)]) == 2  # exits before binding anything
    assert "warmline.toml:2" in capsys.readouterr().err
    assert main(["config", "check", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "expected"), [
    ('[outbound]\nallow = ["http://x"]\n', "warmline.toml:2: outbound.allow:"),
    ('[outbound]\ntrusted = ["10.0.0.0/33"]\n', "warmline.toml:2: outbound.trusted:"),
    ('[outbound]\ncaller_id = "support"\n', "warmline.toml:2: outbound.caller_id:"),
    ('[callbacks]\ndial = true\nattempts = 0\n', "warmline.toml:3: callbacks.attempts:"),
    ('[callbacks]\ndial = true\nhours = "8-20"\n', "warmline.toml:3: callbacks.hours:"),
    ('[callbacks]\ndial = true\nhours = "20:00-08:00"\n', "callbacks.hours: closes before"),
    ('[callbacks]\ndial = true\nzone = "Mars/Base"\n',
     "warmline.toml:3: callbacks.zone: 'Mars/Base' is not an IANA time zone"),
    ('[events]\ncall_url_hosts = ["crm.example.com"]\n',
     "events: Value error, secret_env: call_url_hosts needs a signing secret"),
    ('[events]\nsecret_env = "X"\ncall_url_hosts = ["http://crm.example.com"]\n',
     "warmline.toml:3: events.call_url_hosts:"),
])
def test_outbound_callbacks_and_call_urls_problems_name_the_key(
        tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as broken:
        load(write(tmp_path, text))
    assert expected in str(broken.value), str(broken.value)


def test_outbound_and_callbacks_build_what_the_engine_takes(tmp_path: Path) -> None:
    from datetime import time

    config = load(write(tmp_path, '[outbound]\nallow = ["tel:+4420*"]\n'
                                  'caller_id = "sip:support@acme.example"\n'
                                  'caller_ids = ["sip:sales@acme.example"]\n'
                                  '[callbacks]\ndial = true\nattempts = 4\n'
                                  'retry_interval_s = 600\nhours = "08:00-20:00"\n'
                                  'zone = "Europe/London"\nname = "Acme"\n'))
    outbound = config.outbound.policy()
    assert outbound.destination_problem("tel:+442071234567", True) is None
    refused = outbound.destination_problem("tel:+19005550100", True)
    assert refused is not None and "[outbound] allow" in refused
    assert outbound.caller_id_problem("sip:sales@acme.example") is None
    assert outbound.caller_id_problem("sip:bank@bank.example") is not None
    settings = config.callbacks.settings()
    assert settings is not None and settings.name == "Acme"
    assert (settings.policy.attempts, settings.policy.retry_interval,
            settings.policy.window) == (4, 600.0, (time(8), time(20)))


def test_by_default_nothing_dials_out_and_callbacks_are_not_dialled(tmp_path: Path) -> None:
    config = load(write(tmp_path, ""))
    assert config.callbacks.settings() is None
    problem = config.outbound.policy().destination_problem("sip:alice@127.0.0.1", False)
    assert problem is not None and "[outbound] allow" in problem
