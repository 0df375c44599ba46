"""No orphan legs: a crashed run's dialogs ended by the next one, silent callers hung up."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.unit.sipnet import FakeNet
from tests.unit.test_useragent import ALICE, BOB, SDP_A, SDP_B
from warmline.calls.call import Call, CallState
from warmline.calls.dialog_journal import DialogJournal
from warmline.calls.watchdog import SilenceWatchdog
from warmline.media.plane import LegCounters
from warmline.sip.dialog_memo import CSEQ_JUMP, DialogMemo
from warmline.sip.events import Target
from warmline.sip.message import Request, parse_message
from warmline.sip.session import CallEnded, IncomingCall, RememberedDialogEnded, Session
from warmline.sip.useragent import UserAgent

REASON = 'Q.850;cause=41;text="warmline restarted"'


def confirmed_call() -> tuple[FakeNet, UserAgent, UserAgent, Session]:
    """Alice (warmline) calls Bob; returns Alice's confirmed session."""
    net = FakeNet()
    alice, bob = net.add(UserAgent(), *ALICE), net.add(UserAgent(), *BOB)
    session = alice.invite("sip:bob@127.0.0.2:5080", net.now, sdp=SDP_A,
                           target=Target("udp", *BOB))
    net.flush()
    [incoming] = [e for e in net.events[id(bob)] if isinstance(e, IncomingCall)]
    bob.answer(incoming.session, SDP_B, net.now)
    net.flush()
    return net, alice, bob, session


def test_a_new_agent_ends_a_dialog_from_its_memo_with_a_reason(tmp_path: Path) -> None:
    net, alice, bob, session = confirmed_call()
    memo = alice.memo_of(session)
    assert memo is not None
    journal = DialogJournal(tmp_path / "dialogs.db")
    journal.remember(memo)
    journal.close()
    # the process dies; a new one on the same address reads the journal
    del net.agents[ALICE]
    reborn = net.add(UserAgent(), *ALICE)
    [left] = DialogJournal(tmp_path / "dialogs.db").left_over()
    assert left == memo
    reborn.end_remembered(left, net.now, REASON)
    net.flush()
    byes = [parse_message(t.data) for _, _, t in net.wire if t.data.startswith(b"BYE ")]
    assert len(byes) == 1 and isinstance(byes[0], Request)
    assert byes[0].get("reason") == REASON
    assert byes[0].cseq.seq == memo.local_seq + CSEQ_JUMP + 1  # past any sent before
    assert any(isinstance(e, CallEnded) for e in net.events[id(bob)])  # Bob's call is over
    [done] = [e for e in net.events[id(reborn)] if isinstance(e, RememberedDialogEnded)]
    assert done.status == 200 and done.memo == memo


def test_a_memo_nobody_answers_ends_as_408(tmp_path: Path) -> None:
    net, alice, _, session = confirmed_call()
    memo = alice.memo_of(session)
    assert memo is not None
    del net.agents[BOB]  # the far end is gone too
    alice.end_remembered(memo, net.now, REASON)
    net.advance(40)
    [done] = [e for e in net.events[id(alice)] if isinstance(e, RememberedDialogEnded)]
    assert done.status == 408


def test_the_journal_drops_rows_it_cannot_read(tmp_path: Path) -> None:
    (tmp_path / "dialogs.log").write_text('+"torn"\t{"call_id": \n+"cut-off')  # two torn
    journal = DialogJournal(tmp_path / "dialogs.db")
    assert journal.left_over() == [] and len(journal) == 0
    assert DialogMemo.from_json(DialogMemo("c", "l", "r", "<sip:a@h>", "<sip:b@h>", "sip:b@h",
                                           "<sip:a@h>", 3, (), "udp", "h", 5060).to_json()).key \
        == "c;l"


def memo_of(call_id: str) -> DialogMemo:
    return DialogMemo(call_id, "l", "r", "<sip:a@h>", "<sip:b@h>", "sip:b@h", "<sip:a@h>", 3,
                      (), "udp", "h", 5060)


def test_the_journal_keeps_what_is_up_across_rewrites_and_restarts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Appends, a rewrite when it holds four times more lines than live dialogs (at least
    COMPACT_AT_LEAST), and a restart that finds exactly the dialogs still up."""
    from warmline.calls import dialog_journal

    journal = DialogJournal(tmp_path / "dialogs.db")
    monkeypatch.setattr(dialog_journal, "COMPACT_AT_LEAST", 8)
    journal._rewrite_at = 8
    for n in range(20):
        journal.remember(memo_of(f"c{n}"))
        if n % 4:
            journal.forget(f"c{n};l")
    journal.forget("never-remembered;l")  # nothing to forget: no line
    lines = (tmp_path / "dialogs.log").read_text().splitlines()
    assert len(lines) < 20  # rewritten on the way (35 lines were appended)
    journal.close()
    left = DialogJournal(tmp_path / "dialogs.db").left_over()
    assert sorted(memo.call_id for memo in left) == ["c0", "c12", "c16", "c4", "c8"]
    assert oct((tmp_path / "dialogs.log").stat().st_mode & 0o777) == "0o600"


def test_torn_lines_and_short_writes_cost_only_themselves(tmp_path: Path) -> None:
    """A memo cut short does not replace the good one before it; after a write that stopped
    part-way (a full disk) the next line starts on a line of its own."""
    good = memo_of("c1")
    (tmp_path / "dialogs.log").write_text(
        f'+"c1;l"\t{good.to_json()}\n+"c1;l"\t{good.to_json()[:30]}\n')
    journal = DialogJournal(tmp_path / "dialogs.db")
    assert journal.left_over() == [good]
    journal._torn = True  # as a short write leaves it
    journal.forget("c1;l")
    journal.remember(memo_of("c2"))
    journal.close()
    assert [m.call_id for m in DialogJournal(tmp_path / "dialogs.db").left_over()] == ["c2"]


def test_left_over_is_what_the_last_run_left_not_what_this_one_confirmed(
        tmp_path: Path) -> None:
    """In a cluster the left-over dialogs are ended seconds after the listeners open: a
    call confirmed meanwhile is not one of them."""
    journal = DialogJournal(tmp_path / "dialogs.db")
    journal.remember(memo_of("old"))
    journal.close()
    journal = DialogJournal(tmp_path / "dialogs.db")
    journal.remember(memo_of("new"))
    assert [m.call_id for m in journal.left_over()] == ["old"]


def test_a_journal_that_cannot_be_rewritten_backs_off(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from warmline.calls import dialog_journal

    journal = DialogJournal(tmp_path / "dialogs.db")
    monkeypatch.setattr(dialog_journal, "COMPACT_AT_LEAST", 10)
    journal._rewrite_at = 10
    (tmp_path / "dialogs.log.tmp").mkdir()  # the rewrite's temporary file cannot be made
    for n in range(100):
        journal.remember(memo_of(f"c{n}"))
        journal.forget(f"c{n};l")
    # tried at 10 lines, then only once the file doubled: 20, 40, 80, 160
    assert journal.rewrite_failures == 5 and journal.failures == 0
    assert len((tmp_path / "dialogs.log").read_text().splitlines()) == 200


def test_the_first_layouts_table_is_carried_over_then_removed(tmp_path: Path) -> None:
    import sqlite3

    old = sqlite3.connect(tmp_path / "dialogs.db")
    old.execute("CREATE TABLE dialogs (key TEXT PRIMARY KEY, memo TEXT)")
    old.execute("INSERT INTO dialogs VALUES (?, ?)", ("c1;l", memo_of("c1").to_json()))
    old.commit()
    old.close()
    [left] = DialogJournal(tmp_path / "dialogs.db").left_over()
    assert left == memo_of("c1") and not (tmp_path / "dialogs.db").exists()
    [again] = DialogJournal(tmp_path / "dialogs.db").left_over()  # now in the new file
    assert again == memo_of("c1")


@dataclass
class FakeStream:
    direction: str = "sendrecv"


@dataclass
class FakeNegotiation:
    stream: FakeStream | None = field(default_factory=FakeStream)


@dataclass
class FakeMedia:
    counters: LegCounters = field(default_factory=LegCounters)


@dataclass
class FakeLeg:
    media: FakeMedia = field(default_factory=FakeMedia)
    negotiation: FakeNegotiation = field(default_factory=FakeNegotiation)


def fake_call(name: str, answered: bool = True, direction: str = "sendrecv") -> Call:
    leg = FakeLeg(negotiation=FakeNegotiation(FakeStream(direction)))
    return Call(name, leg, 0.0, answered_at=0.0 if answered else None)


def test_a_caller_silent_past_the_timeout_is_hung_up_and_no_other() -> None:
    hung_up: list[tuple[str, str]] = []
    watchdog = SilenceWatchdog(30.0, lambda call, reason: hung_up.append((call.id, reason)))
    talking, silent, ringing, held = (fake_call("talking"), fake_call("silent"),
                                      fake_call("ringing", answered=False),
                                      fake_call("held", direction="sendonly"))
    calls = [talking, silent, ringing, held]
    for second in range(0, 61, 5):
        talking.caller.media.counters.received += 250  # RTP keeps coming
        if second == 20:
            silent.caller.media.counters.rtcp += 1  # an RTCP report counts as alive
        watchdog.sweep(calls, float(second))
    assert hung_up == [("silent", 'SIP;cause=408;text="no RTP or RTCP from the caller for 30 s"')]
    assert watchdog.ended == 1
    talking.state = CallState.ENDED
    watchdog.sweep(calls, 100.0)
    assert "talking" not in watchdog._seen  # ended calls are forgotten


def test_two_engines_never_share_a_records_folder(tmp_path: Path) -> None:
    import os

    import pytest

    from warmline.server import _records_lock

    held = f"in use by another warmline \\(PID {os.getpid()}\\)"
    with _records_lock(tmp_path), pytest.raises(OSError, match=held), _records_lock(tmp_path):
        pass
    with _records_lock(tmp_path):  # released with the first engine
        pass
