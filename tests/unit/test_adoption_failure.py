"""An orphaned call that cannot be adopted whole is not adopted at all: what was opened
for its first dialog is undone (its media leg closed, the dialog out of our UA) and every
dialog of it is hung up from its memo, instead of a half-adopted call that nobody ends.
Here the heir runs out of media ports at the bridged call's second leg."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.unit.sipnet import FakeNet
from tests.unit.test_orphans import confirmed_call
from tests.unit.test_useragent import BOB
from warmline.calls.adoption import Adoption
from warmline.cluster.takeover import OrphanCall
from warmline.media.sdes import SrtpPolicy
from warmline.sip.useragent import UserAgent

CAROL = ("127.0.0.3", 5090)  # the heir


class Media:
    anchor = None

    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class Plane:
    def __init__(self) -> None:
        self.opened: list[Media] = []
        self.released: list[str] = []

    async def open_leg(self, label: str) -> Media:
        if self.opened:
            raise OSError("no free media port")
        self.opened.append(Media())
        return self.opened[-1]

    def release(self, anchor: str) -> None:
        self.released.append(anchor)


class Shell:
    """The part of SipShell adoption uses: the UA and a clock, on the fake network."""

    def __init__(self, net: FakeNet, ua: UserAgent) -> None:
        self.net, self.ua = net, ua

    def run(self, action: Any) -> Any:
        result = action(self.net.now)
        self.net.flush()
        return result

    def now(self) -> float:
        return self.net.now


class Board:
    media_address = "127.0.0.3"
    codecs = ["PCMU"]
    srtp = SrtpPolicy.ACCEPT

    def __init__(self, shell: Shell) -> None:
        self.shell = shell
        self.plane = Plane()
        self.calls: dict[str, Any] = {}

    def retire_ended(self, call_id: str) -> bool:
        return call_id not in self.calls


def test_a_bridged_call_whose_second_leg_cannot_open_is_ended_not_half_adopted() -> None:
    net, alice, _, session = confirmed_call()
    memo = alice.memo_of(session)
    assert memo is not None
    del net.agents[net.address_of(alice)]  # the node that owned the call died
    carol = net.add(UserAgent(), *CAROL)
    board = Board(Shell(net, carol))
    good = {"memo_key": memo.key, "memo": memo.to_json(), "call": "call-1",
            "role": "caller", "inbound": False, "codec": "PCMU"}
    human_memo = memo.to_json().replace(memo.local_tag, "human-leg-tag")
    human = {**good, "memo_key": "human-leg", "role": "human", "memo": human_memo}
    orphan = OrphanCall("a", {"id": "call-1", "state": "human"}, [good, human])
    adoption = Adoption(board)  # type: ignore[arg-type]
    assert asyncio.run(adoption.adopt(orphan)) is None
    assert [media.closed for media in board.plane.opened] == [True]  # the first leg's
    assert carol.sessions == []  # its adopted dialog let go again, without a word
    byes = net.sent_by(carol, b"BYE ")
    assert len(byes) == 2  # both dialogs hung up from their memos, at Bob's address
    assert all(t.target.port == BOB[1] for t in byes)
    assert not net.sent_by(carol, b"INVITE ")  # nothing was moved here
    assert adoption.ended == 2 and adoption.adopted == 0
