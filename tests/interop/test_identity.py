"""What a real phone on the human's side is told of the caller (PJSIP prints the INVITE).

The sipp caller claims to be a bank (P-Asserted-Identity) and brings a signed
identity (RFC 8224 Identity). From an untrusted peer the claim never reaches
the human; from a trusted one it does. The signed identity travels with the
caller's own number and is left out when the human sees a trunk number.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.interop.peers import free_port
from tests.interop.pjsip_phone import pjsip_phone
from tests.interop.transfer_peers import WAIT_FOR_BYE, kinds, run_transfer
from warmline.calls.call import Call
from warmline.transfer.handoff import CallerId, CallerIdMode, Destination, Handoff, TransferMode

pytestmark = pytest.mark.interop
FORGED = "<sip:+18005550000@bank.test>"
PASSPORT = "eyJhbGciOiJFUzI1NiJ9.eyJvcmlnIjp7fX0.c2ln;info=<https://cert.test/a.pem>;ppt=shaken"
CLAIMS = f"\n      P-Asserted-Identity: {FORGED}\n      Identity: {PASSPORT}"


def human_sees(tmp_path: Path, caller_id: CallerId, trusted: tuple[str, ...]) -> str:
    """The INVITE the human's phone received."""
    port = free_port()
    with pjsip_phone(tmp_path / "phone", port, ring_ms=100, hangup_after_ms=500) as human:
        def make(call: Call) -> Handoff:
            return Handoff(call.id, Destination(human.uri, TransferMode.BRIDGE, 5),
                           caller_id=caller_id)

        outcome = asyncio.run(run_transfer(
            tmp_path, WAIT_FOR_BYE, make, [], caller_markers={"headers": CLAIMS},
            engine_options={"trusted_identity": trusted}))
        human.wait("done")
        assert "connected" in kinds(outcome.handoff)
        [invite] = human.invites()
    return invite


def header(invite: str, name: str) -> list[str]:
    prefix = name.lower() + ":"
    return [line.split(":", 1)[1].strip() for line in invite.splitlines()
            if line.lower().startswith(prefix)]


def test_an_untrusted_claim_never_reaches_the_human(tmp_path: Path) -> None:
    invite = human_sees(tmp_path, CallerId(), trusted=())
    [asserted] = header(invite, "P-Asserted-Identity")
    assert "bank.test" not in invite and "sip:caller@" in asserted
    assert header(invite, "Identity") == [PASSPORT]  # the caller's own, as it came


def test_a_trusted_peer_s_assertion_is_passed_on(tmp_path: Path) -> None:
    invite = human_sees(tmp_path, CallerId(), trusted=("127.0.0.0/8",))
    assert header(invite, "P-Asserted-Identity") == [FORGED]


def test_a_trunk_number_is_sent_without_the_caller_s_passport(tmp_path: Path) -> None:
    invite = human_sees(tmp_path, CallerId(CallerIdMode.TRUNK, "sip:+15550199@127.0.0.1"),
                        trusted=())
    assert header(invite, "Identity") == [] and "+15550199" in header(invite, "From")[0]
