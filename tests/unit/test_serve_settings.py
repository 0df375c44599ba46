"""`warmline serve` settings: a flag wins over warmline.toml, which wins over the default."""

from __future__ import annotations

import asyncio
import gc
import logging
from pathlib import Path

import pytest

from warmline.cli import main
from warmline.server import serve
from warmline.settings import HttpSpec, ServeSettings
from warmline.transport.listen import ListenSpec

CONFIG = """
[sip]
listen = ["tcp:127.0.0.1:5071"]
[http]
listen = "127.0.0.1:8090"
api_token_env = "WARMLINE_TEST_TOKEN"
[media]
ports = "40000-41000"
codecs = ["PCMA"]
[storage]
records = "config-records"
[context]
webhook = "https://desk.example.com/config"
"""


def settings_for(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> ServeSettings:
    """What `warmline ARGV` would hand to serve(), without binding anything."""
    handed: list[ServeSettings] = []
    monkeypatch.setenv("WARMLINE_TEST_TOKEN", "from-config")
    monkeypatch.delenv("WARMLINE_API_TOKEN", raising=False)

    async def record(settings: ServeSettings, stop: asyncio.Event | None = None) -> None:
        handed.append(settings)

    monkeypatch.setattr("warmline.cli.serve", record)
    monkeypatch.setattr("warmline.cli._install_fast_loop", lambda: None)
    assert main(argv) == 0
    return handed[0]


def test_no_flags_and_no_config_is_the_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(monkeypatch, ["serve"])
    assert settings == ServeSettings()
    assert settings.listen == (ListenSpec("udp", "127.0.0.1", 5070),)
    assert settings.http is None and settings.media_ports == range(20000, 30000)
    assert settings.database_url == "sqlite:///warmline-records/records.db"


def test_the_config_wins_over_the_defaults(monkeypatch: pytest.MonkeyPatch,
                                           tmp_path: Path) -> None:
    config = tmp_path / "warmline.toml"
    config.write_text(CONFIG)
    settings = settings_for(monkeypatch, ["serve", "--config", str(config)])
    assert settings.listen == (ListenSpec("tcp", "127.0.0.1", 5071),)
    assert settings.http == HttpSpec("127.0.0.1", 8090) and settings.api_token == "from-config"
    assert settings.media_ports == range(40000, 41000) and settings.codecs == ("PCMA",)
    assert settings.database_url == "sqlite:///config-records/records.db"
    assert settings.escalation.public_url == "http://127.0.0.1:8090"
    assert settings.escalation.webhook_url == "https://desk.example.com/config"


def test_the_media_plane_reaches_serve(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from warmline.media.rtpengine import PlaneKind

    config = tmp_path / "warmline.toml"
    config.write_text('[media]\nplane = "rtpengine"\nrtpengine = "udp:127.0.0.2:2223"\n'
                      'rtpengine_bridge = true\n')
    settings = settings_for(monkeypatch, ["serve", "--config", str(config)])
    assert settings.media_plane is PlaneKind.RTPENGINE
    assert settings.rtpengine == ("127.0.0.2", 2223) and settings.rtpengine_bridge
    assert settings.media_address == "127.0.0.2"  # SDP names rtpengine, unless advertise says
    assert ServeSettings().media_plane is PlaneKind.EMBEDDED


def test_flags_win_over_the_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "warmline.toml"
    config.write_text(CONFIG)
    token_file = tmp_path / "token"
    token_file.write_text("from-flag\n")
    settings = settings_for(monkeypatch, [
        "serve", "--config", str(config), "--sip", "udp:127.0.0.1:0", "--http", "[::1]:8091",
        "--api-token-file", str(token_file), "--media-ports", "50000-50100",
        "--records", "flag-records",
        "--db", "sqlite:///flag.db", "--webhook", "https://desk.example.com/flag",
        "--escalate-to", "sip:human@127.0.0.1:5090", "--escalate-mode", "blind"])
    assert settings.listen == (ListenSpec("udp", "127.0.0.1", 0),)
    assert settings.http == HttpSpec("::1", 8091) and settings.api_token == "from-flag"
    assert settings.media_ports == range(50000, 50100)
    assert settings.codecs == ("PCMA",)  # no flag for codecs: still the config's
    assert settings.records == Path("flag-records") and settings.database_url == "sqlite:///flag.db"
    assert settings.escalation.webhook_url == "https://desk.example.com/flag"
    assert settings.escalation.destination is not None
    assert settings.escalation.destination.uri == "sip:human@127.0.0.1:5090"


def test_each_run_gets_its_own_port_allocator() -> None:
    settings = ServeSettings()
    assert settings.port_range() is not settings.port_range()
    assert settings.port_range().start == 20000


def test_serve_runs_on_one_settings_value_until_stopped(
        caplog: pytest.LogCaptureFixture) -> None:
    async def run_briefly() -> None:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.2, stop.set)
        await serve(ServeSettings(listen=(ListenSpec("udp", "127.0.0.1", 0),)), stop)

    thresholds = gc.get_threshold()
    try:
        with caplog.at_level(logging.INFO, logger="warmline"):
            asyncio.run(run_briefly())
    finally:  # serve() tunes the collector for the whole process
        gc.unfreeze()
        gc.set_threshold(*thresholds)
    assert "warmline listening on udp:127.0.0.1:" in caplog.text
    assert "stopped: 0 call(s) answered" in caplog.text


def test_an_api_others_can_reach_never_runs_open(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    settings = settings_for(monkeypatch, ["serve", "--http", "0.0.0.0:8092"])
    assert settings.api_token and len(settings.api_token) >= 32
    assert settings.api_token in capsys.readouterr().err  # printed once, for the operator
    loopback = settings_for(monkeypatch, ["serve", "--http", "127.0.0.1:8092"])
    assert loopback.api_token is None


def test_the_token_comes_from_the_environment_not_a_flag(
        monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_for(monkeypatch, ["serve", "--http", "0.0.0.0:8092"])
    monkeypatch.setenv("WARMLINE_API_TOKEN", "from-env")
    handed: list[ServeSettings] = []

    async def record(settings: ServeSettings, stop: asyncio.Event | None = None) -> None:
        handed.append(settings)

    monkeypatch.setattr("warmline.cli.serve", record)
    assert main(["serve", "--http", "0.0.0.0:8092"]) == 0
    assert handed[0].api_token == "from-env" != settings.api_token
    with pytest.raises(SystemExit):
        main(["serve", "--http", "127.0.0.1:8092", "--api-token", "on-the-command-line"])


@pytest.mark.parametrize(("text", "named"), [
    ('[http]\napi_token = "inline"\n', "api_token_env"),
    ('[context]\nwebhook_secret = "inline"\n', "webhook_secret_env"),
    ('[http]\napi_token_env = "WARMLINE_TEST_UNSET_VARIABLE"\n', "http.api_token_env"),
    ('[sip]\naccess = "challenge"\n', "sip.accounts"),
    ('[[sip.accounts]]\nusername = "pbx"\n', "password_env or password_file"),
    ('[transfer]\nallow = ["sip:"]\n', "transfer.allow"),
    ('[limits]\nsip_rate = -1\n', "limits.sip_rate"),
    ('[sip]\ntrusted = ["10.0.0.0/33"]\n', "sip.trusted"),
])
def test_insecure_or_broken_settings_are_refused_naming_the_key(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        text: str, named: str) -> None:
    config = tmp_path / "warmline.toml"
    config.write_text(text)
    monkeypatch.delenv("WARMLINE_TEST_UNSET_VARIABLE", raising=False)
    assert main(["config", "check", str(config)]) == 2
    assert named in capsys.readouterr().err


def test_sip_access_and_limits_reach_the_core(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("WARMLINE_TEST_SIP_PASSWORD", "s3cret")
    config = tmp_path / "warmline.toml"
    config.write_text('[sip]\ntrusted = ["10.0.0.0/8"]\naccess = "challenge"\n'
                      '[[sip.accounts]]\nusername = "pbx"\n'
                      'password_env = "WARMLINE_TEST_SIP_PASSWORD"\n'
                      '[limits]\nsip_rate = 5\nmax_calls = 3\ntcp_per_source = 2\n'
                      '[transfer]\nallow = ["tel:+4420*"]\n')
    settings = settings_for(monkeypatch, ["serve", "--config", str(config)])
    core = settings.user_agent
    assert core.trusted_networks == ["10.0.0.0/8"] and core.auth_users == {"pbx": "s3cret"}
    assert core.default_access.value == "challenge" and core.source_limit.rate == 5
    assert settings.max_calls == 3 and settings.stream_limits.per_source == 2
    assert settings.destination_policy.problem("tel:+442079460000") is None
    assert settings.destination_policy.problem("tel:+19005550100") is not None
    # the default: loopback trusted, everyone else refused, transfers to loopback only
    default = ServeSettings()
    assert default.user_agent.default_access.value == "trusted"
    assert default.destination_policy.problem("sip:a@10.0.0.1") is not None


@pytest.mark.parametrize(("text", "named"), [
    ('[events]\nurl = "http://127.0.0.1:99999/hook"\nsecret_env = "X"\n', "valid port"),
    ('[events]\nurl = "https://crm.example/hook"\n', "secret_env"),
    ('[events]\nurl = "https://crm.example/hook"\nsecret_env = "WARMLINE_TEST_EVENTS"\n',
     "events.secret: not usable"),
])
def test_status_callbacks_are_checked_at_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str],
                                              text: str, named: str) -> None:
    monkeypatch.setenv("WARMLINE_TEST_EVENTS", "whsec_not*base64!")
    config = tmp_path / "warmline.toml"
    config.write_text(text)
    assert main(["config", "check", str(config)]) == 2
    assert named in capsys.readouterr().err


def test_outbound_callbacks_and_call_urls_reach_serve(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    monkeypatch.setenv("WARMLINE_TEST_EVENTS", "a-test-secret")
    config = tmp_path / "warmline.toml"
    config.write_text('[outbound]\nallow = ["sip:*@customers.example"]\n'
                      'caller_id = "sip:support@acme.example"\n'
                      '[callbacks]\ndial = true\nattempts = 5\n'
                      '[events]\nsecret_env = "WARMLINE_TEST_EVENTS"\n'
                      'call_url_hosts = ["crm.example.com"]\n')
    settings = settings_for(monkeypatch, ["serve", "--config", str(config)])
    assert settings.outbound.caller_id == "sip:support@acme.example"
    assert settings.outbound.destination_problem("sip:ann@customers.example", False) is None
    assert settings.callbacks is not None and settings.callbacks.policy.attempts == 5
    assert settings.call_urls is not None and settings.call_urls.hosts == ("crm.example.com",)
    assert settings.events is None  # no [events] url: only per-call URLs are signed
    urls = settings.call_urls.build()
    assert urls.problem("https://crm.example.com/x") is None
