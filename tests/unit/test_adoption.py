"""A dialog taken over by another node: re-INVITE from the new node, the far end's requests
follow it there (RFC 3261 §12.2: a re-INVITE refreshes the remote target both ways)."""

from __future__ import annotations

import pytest

from tests.unit.sipnet import FakeNet
from tests.unit.test_orphans import confirmed_call
from tests.unit.test_useragent import ALICE, SDP_A, SDP_B
from warmline.sip.dialog_memo import CSEQ_JUMP
from warmline.sip.message import Request, parse_message
from warmline.sip.session import (
    CallEnded,
    IncomingCall,
    InDialogResponse,
    RequestInDialog,
    SessionState,
)
from warmline.sip.useragent import UserAgent

CAROL = ("127.0.0.3", 5090)  # the node that takes over


def test_an_adopted_dialog_moves_the_far_end_to_the_new_node() -> None:
    net, alice, bob, session = confirmed_call()
    memo = alice.memo_of(session)
    assert memo is not None
    del net.agents[ALICE]  # Alice's node dies
    carol = net.add(UserAgent(), *CAROL)
    adopted = carol.adopt(memo, inbound=False)
    assert adopted.state is SessionState.CONFIRMED
    assert adopted.remote_party.uri == session.remote_party.uri  # Bob, as Alice saw him
    carol.reinvite(adopted, SDP_A, net.now)
    net.flush()
    [reinvite] = [e for e in net.events[id(bob)] if isinstance(e, RequestInDialog)]
    assert reinvite.request.cseq.seq > memo.local_seq + CSEQ_JUMP  # CSeq only grows
    assert reinvite.request.contact is not None
    assert reinvite.request.contact.sip_uri.port == CAROL[1]  # Bob's remote target is Carol
    bob.respond(reinvite.transaction, 200, net.now, session=reinvite.session, body=SDP_B)
    net.flush()
    [answered] = [e for e in net.take(carol) if isinstance(e, InDialogResponse)]
    assert answered.response.status == 200 and answered.response.body == SDP_B
    assert net.sent_by(carol, b"ACK ")  # Carol acknowledged her re-INVITE
    [bob_session] = [e.session for e in net.events[id(bob)] if isinstance(e, IncomingCall)]
    bob.bye(bob_session, net.now)
    net.flush()
    byes = [parse_message(t.data) for _, a, t in net.wire
            if a == net.address_of(bob) and t.data.startswith(b"BYE ")]
    assert len(byes) == 1 and isinstance(byes[0], Request)
    assert byes[0].uri.port == CAROL[1]  # type: ignore[union-attr]
    assert any(isinstance(e, CallEnded) and e.session is adopted for e in net.take(carol))
    assert not net.outside  # nothing went to Alice's dead address


def test_an_adopted_inbound_dialog_keeps_the_caller_as_remote_party() -> None:
    net, alice, bob, session = confirmed_call()
    [incoming] = [e.session for e in net.events[id(bob)] if isinstance(e, IncomingCall)]
    memo = bob.memo_of(incoming)  # Bob answered Alice: his dialog is inbound
    assert memo is not None
    carol = net.add(UserAgent(), *CAROL)
    adopted = carol.adopt(memo, inbound=True)
    assert adopted.inbound and adopted.remote_party.uri == session.local_party.uri
    carol.bye(adopted, net.now, 'SIP;cause=500;text="node lost"')
    net.flush()
    assert any(isinstance(e, CallEnded) for e in net.events[id(alice)])


def test_a_dialog_cannot_be_adopted_twice() -> None:
    net, alice, _, session = confirmed_call()
    memo = alice.memo_of(session)
    assert memo is not None
    with pytest.raises(ValueError, match="already held"):
        alice.adopt(memo, inbound=False)
    assert isinstance(net, FakeNet)
