"""Trunks from warmline.toml: accounts read from the environment or a file (never the file
itself), routing by glob or domain, tel: numbers through a trunk, errors naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from warmline.calls.trunks import NoRoute, Trunks
from warmline.config import ConfigError, load

CARRIER = """
[trunks.carrier]
uri = "sip:sip.carrier.test;transport=tcp"
username = "acme"
password_env = "WARMLINE_TEST_CARRIER"
register = true
outbound_proxy = "sip:edge.carrier.test:5070"
caller_id = "sip:+15550100@sip.carrier.test"
destinations = ["tel:*", "sip:+*@*"]

[trunks.pbx]
uri = "sip:pbx.office.test"
username = "warmline"
password_file = "{secret}"
"""


def trunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str = CARRIER) -> Trunks:
    secret = tmp_path / "pbx.secret"
    secret.write_text("from-a-file\n")
    monkeypatch.setenv("WARMLINE_TEST_CARRIER", "from-the-env")
    path = tmp_path / "warmline.toml"
    path.write_text(text.replace("{secret}", str(secret)))
    return load(path).build_trunks()


def test_passwords_come_from_the_environment_or_a_file_and_never_show(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    carrier, pbx = trunks(tmp_path, monkeypatch).trunks
    assert carrier.credentials is not None and carrier.credentials.password == "from-the-env"
    assert pbx.credentials is not None and pbx.credentials.password == "from-a-file"
    assert "from-the-env" not in repr(carrier) and "from-a-file" not in repr(pbx)
    assert carrier.register and not pbx.register and str(carrier.aor) == "sip:acme@sip.carrier.test"


def test_destinations_are_routed_by_glob_then_by_domain(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    table = trunks(tmp_path, monkeypatch)
    number = table.route("tel:+1-555-0199")
    assert number.trunk is not None and number.trunk.name == "carrier"
    assert str(number.request_uri) == "sip:+15550199@sip.carrier.test;user=phone"
    assert str(number.next_hop) == "sip:edge.carrier.test:5070"  # the outbound proxy
    assert number.headers == [("Route", "<sip:edge.carrier.test:5070;lr>")]
    agent = table.route("sip:agent@pbx.office.test")
    assert agent.trunk is not None and agent.trunk.name == "pbx" and agent.headers == []
    assert str(agent.next_hop) == "sip:pbx.office.test"
    direct = table.route("sip:human@127.0.0.1:5080")
    assert direct.trunk is None and direct.credentials is None


def test_a_tel_number_without_a_trunk_is_refused() -> None:
    with pytest.raises(NoRoute, match="needs a trunk"):
        Trunks().route("tel:+15550100")


@pytest.mark.parametrize(("text", "problem"), [
    ('[trunks.x]\nuri = "sip:x.test"\nusername = "u"\npassword_env = "WARMLINE_UNSET_VAR"\n',
     "trunks.x.password_env: WARMLINE_UNSET_VAR is not set"),
    ('[trunks.x]\nuri = "sip:x.test"\nusername = "u"\npassword_file = "/nonexistent/s"\n',
     "trunks.x.password_file: cannot read /nonexistent/s"),
    ('[trunks.x]\nuri = "tel:+1555"\n', "trunks.x.uri: Value error, 'tel:+1555' is not a sip:"),
    ('[trunks.x]\nuri = "sip:x.test"\nregister = true\n', "username: needed to register"),
    ('[trunks.x]\nuri = "sip:x.test"\npassword = "in-the-file"\n',
     "trunks.x.password: Extra inputs are not permitted"),
    ('[dns]\nservers = ["dns.example"]\n', "a DNS server is an IP address[:port]"),
])
def test_trunk_and_dns_problems_name_the_key(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "warmline.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as broken:
        load(path)
    assert problem in str(broken.value), str(broken.value)


def test_a_challenge_is_answered_with_the_account_for_its_realm() -> None:
    from warmline.sip.auth import Credentials, DigestClient

    anywhere, carrier = Credentials("any", "a"), Credentials("acme", "c", "sip.carrier.test")
    client = DigestClient([anywhere, carrier])
    assert client.find("sip.carrier.test") is carrier and client.find("other") is anywhere


def test_a_trunk_still_resolving_its_registrar_shows_as_registering_not_failed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from warmline.calls.registrations import TrunkStatus

    carrier, _ = trunks(tmp_path, monkeypatch).trunks
    status = TrunkStatus(carrier)
    assert status.as_dict(0.0)["state"] == "registering"
    status.problem = "dns_failed: sip.carrier.test: no such name"
    assert status.as_dict(0.0)["state"] == "failed"
