"""An ended call is held whole for a few seconds, then only as its listing, then not at all.

The switchboard drives both steps off queues in the order calls ended, on its shell's
clock; these cases move that clock by hand (no sockets, no media).
"""

from __future__ import annotations

import itertools
from types import SimpleNamespace
from typing import Any

import pytest

from warmline.calls.call import Call, CallState, EndedCall
from warmline.calls.leg import CallLeg
from warmline.calls.switchboard import KEEP_WHOLE_SECONDS, Switchboard
from warmline.sip.session import CallEnded

KEEP_ENDED = 120.0
_session_ids = itertools.count(1)


class _Clock:
    def __init__(self) -> None:
        self.at = 1000.0

    def now(self) -> float:
        return self.at


class _Heard:
    """The observer: what the switchboard told of the calls, in order."""

    def __init__(self) -> None:
        self.said: list[tuple[str, str]] = []

    def call_started(self, call: Call) -> None: ...

    def call_ended(self, call: Call, reason: str | None) -> None:
        self.said.append(("ended", call.id))

    def call_forgotten(self, call: Call) -> None:
        self.said.append(("forgotten", call.id))

    def call_unlisted(self, call: EndedCall) -> None:
        self.said.append(("unlisted", call.id))

    def registration_changed(self, registration: object) -> None: ...


class _Media:
    def __init__(self) -> None:
        self.on_dtmf: Any = None
        self.closed = self.released = False

    def close(self) -> None:
        self.closed = True

    def release(self) -> None:
        self.released = True


def _board(clock: _Clock, heard: _Heard) -> Switchboard:
    shell = SimpleNamespace(now=clock.now, ua=SimpleNamespace(full=False), resolver=None,
                            on_event=None)
    return Switchboard(shell, SimpleNamespace(), "127.0.0.1", ["PCMU"], heard,  # type: ignore[arg-type]
                       keep_ended=KEEP_ENDED)


def _call(board: Switchboard, clock: _Clock, call_id: str) -> Call:
    party = SimpleNamespace(uri=f"sip:{call_id}@127.0.0.1")
    session = SimpleNamespace(id=next(_session_ids), app={}, remote_party=party,
                              local_party=SimpleNamespace(uri="sip:ai@127.0.0.1"),
                              end_reason=None)
    leg = CallLeg(session, _Media(), SimpleNamespace())  # type: ignore[arg-type]
    call = Call(call_id, leg, clock.now(), legs=[leg], handoff_ids=["handoff-1"])
    board.add_call(call)
    board._legs[session.id] = leg  # as the switchboard keeps a leg it answered
    session.app["call"] = call
    return call


def _hang_up(board: Switchboard, call: Call) -> None:
    board.on_event(CallEnded(call.caller.session, by_remote=True, reason="bye"))


def _listed(board: Switchboard, clock: _Clock, call_id: str) -> EndedCall:
    """A call that ended a little over KEEP_WHOLE_SECONDS ago: held as its listing now."""
    _hang_up(board, _call(board, clock, call_id))
    clock.at += KEEP_WHOLE_SECONDS + 1
    board.forget_ended_calls()
    return board.ended_calls[call_id]


def test_an_ended_call_is_whole_then_listed_then_gone() -> None:
    clock, heard = _Clock(), _Heard()
    board = _board(clock, heard)
    call = _call(board, clock, "call-a")
    media = call.caller.media
    _hang_up(board, call)
    assert call.state is CallState.ENDED and media.closed

    clock.at += KEEP_WHOLE_SECONDS - 0.1
    board.forget_ended_calls()
    assert board.calls["call-a"] is call and not board.ended_calls

    clock.at += 0.2
    board.forget_ended_calls()
    assert "call-a" not in board.calls and heard.said[-1] == ("forgotten", "call-a")
    listed = board.ended_calls["call-a"]
    assert listed.as_dict() == {**call.as_dict(), "state": "ended"}
    assert listed.token == call.token and listed.handoff_ids == ("handoff-1",)
    # what tied the call to itself is undone, so reference counting frees it
    assert "call" not in call.caller.session.app and media.released

    clock.at += KEEP_ENDED - KEEP_WHOLE_SECONDS
    board.forget_ended_calls()
    assert not board.ended_calls and heard.said[-1] == ("unlisted", "call-a")


def test_listings_leave_in_the_order_their_calls_ended() -> None:
    clock, heard = _Clock(), _Heard()
    board = _board(clock, heard)
    first, second = _call(board, clock, "call-1"), _call(board, clock, "call-2")
    _hang_up(board, first)
    clock.at += 30
    _hang_up(board, second)
    clock.at += KEEP_ENDED - 29  # the first ended 121 s ago, the second 91 s ago
    board.forget_ended_calls()
    assert list(board.ended_calls) == ["call-2"]
    assert [said for said in heard.said if said[0] != "ended"] == [
        ("forgotten", "call-1"), ("unlisted", "call-1"), ("forgotten", "call-2")]


def test_a_call_id_back_drops_its_old_listing_and_keeps_the_new_one() -> None:
    clock, heard = _Clock(), _Heard()
    board = _board(clock, heard)
    old = _listed(board, clock, "call-x")
    back = _call(board, clock, "call-x")  # adopted back under its id
    assert "call-x" not in board.ended_calls and ("unlisted", "call-x") in heard.said
    _hang_up(board, back)
    clock.at += KEEP_WHOLE_SECONDS + 1
    board.forget_ended_calls()
    new = board.ended_calls["call-x"]
    assert new is not old
    clock.at = old.ended_at + KEEP_ENDED + 1  # the old listing's time is up, not the new one's
    board.forget_ended_calls()
    assert board.ended_calls["call-x"] is new


def test_a_listed_call_can_be_retired_for_an_id_coming_back() -> None:
    clock, heard = _Clock(), _Heard()
    board = _board(clock, heard)
    _listed(board, clock, "call-r")
    assert board.retire_ended("call-r")
    assert not board.ended_calls and heard.said[-1] == ("unlisted", "call-r")


@pytest.mark.parametrize("keep_ended", [5.0, 10.0])
def test_a_listing_shorter_than_the_whole_time_is_never_kept(keep_ended: float) -> None:
    clock, heard = _Clock(), _Heard()
    board = _board(clock, heard)
    board.keep_ended = keep_ended
    _hang_up(board, _call(board, clock, "call-s"))
    clock.at += keep_ended + 0.1
    board.forget_ended_calls()
    assert not board.calls and not board.ended_calls
    assert heard.said[-2:] == [("forgotten", "call-s"), ("unlisted", "call-s")]


def test_the_api_serves_a_listed_call_as_ended() -> None:
    from fastapi.testclient import TestClient

    from warmline.api import build_app
    from warmline.engine import CallEngine

    clock, heard = _Clock(), _Heard()
    board = _board(clock, heard)
    listed = _listed(board, clock, "call-e")
    engine = SimpleNamespace(calls=board.calls, ended_calls=board.ended_calls,
                             shown_handoff=lambda _: None,
                             shared=None, recordings=SimpleNamespace(phase=lambda _: None))
    engine.known_call = lambda call_id: CallEngine.known_call(engine, call_id)  # type: ignore[arg-type]
    engine.call_listing = lambda: CallEngine.call_listing(engine)  # type: ignore[arg-type]
    api, own = ({"Authorization": f"Bearer {token}"} for token in ("T", listed.token))
    with TestClient(build_app(engine, api_token="T")) as client:  # type: ignore[arg-type]
        assert [call["id"] for call in client.get("/calls", headers=api).json()] == ["call-e"]
        one = client.get("/calls/call-e", headers=api).json()
        assert one["state"] == "ended" and one["source"] == "live"
        assert client.get("/calls/call-e/recording", headers=own).status_code == 200
        hangup = client.post("/calls/call-e/hangup", headers=own)
        assert hangup.status_code == 409 and "has ended" in hangup.text
        stranger = {"Authorization": "Bearer not-its-token"}
        assert client.post("/calls/call-e/hangup", headers=stranger).status_code == 401
        assert client.get("/calls/call-f", headers=api).status_code == 404
        assert client.post("/calls/call-f/hangup", headers=api).status_code == 404


def test_a_live_call_under_an_ended_call_s_id_is_not_let_go() -> None:
    clock, heard = _Clock(), _Heard()
    board = _board(clock, heard)
    _hang_up(board, _call(board, clock, "call-l"))
    clock.at += 1
    live = _call(board, clock, "call-l")  # taken again under its id while still whole
    clock.at += KEEP_WHOLE_SECONDS + 1
    board.forget_ended_calls()
    assert board.calls["call-l"] is live and not board.ended_calls
