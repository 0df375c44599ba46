"""A CallControl with no sockets: it logs what a transfer asks and lets a test say what happens.

Every request a step makes is appended to ``actions`` as a tuple (``("dial",
leg, uri)``, ``("cancel", leg)``, ``("bridge", caller, human)`` ...). Timers
run on a fake clock: :meth:`FakeCallControl.advance` fires the due ones in
order. A test feeds any other event with :meth:`FakeCallControl.feed`, in
whatever order it wants to check, so orderings the network rarely produces
on loopback are tested on purpose rather than by luck.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from warmline.calls.call import CallState
from warmline.media.player import Samples
from warmline.transfer.control import (
    AgentId,
    CallerFacts,
    CallerHungUp,
    LegId,
    PlaybackId,
    ReferId,
    TimerFired,
    TransferEvent,
    WebhookKind,
)
from warmline.transfer.handoff import Handoff
from warmline.transfer.identity import Identity
from warmline.transfer.runner import HandoffRun

CALLER = LegId(0)
FACTS = CallerFacts(allows_refer=True, supports_replaces=True, number="sip:+15550100@pbx",
                    party='"Maria" <sip:+15550100@pbx>', asserted=None, dialled="sip:ai@x")
SPEECH = np.zeros(800, dtype=np.int16)  # what the fake TTS "says": 100 ms


@dataclass
class FakeCallControl:
    caller_facts: CallerFacts = FACTS
    caller_gone: bool = False
    state: CallState = CallState.AI
    clock: float = 0.0
    actions: list[tuple[Any, ...]] = field(default_factory=list)
    cancel_reasons: dict[LegId, str | None] = field(default_factory=dict)  # by leg
    run: HandoffRun | None = None
    _timers: list[tuple[float, int, str]] = field(default_factory=list)
    _live_timers: dict[str, int] = field(default_factory=dict)  # key -> generation
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def caller(self) -> LegId:
        return CALLER

    # -- what the test does --------------------------------------------------------------
    def feed(self, *events: TransferEvent) -> None:
        assert self.run is not None
        for event in events:
            if isinstance(event, CallerHungUp):
                self.caller_gone = True
            self.run.handle(event)

    def advance(self, seconds: float) -> None:
        """Move the clock on, firing each due timer (in deadline order)."""
        until = self.clock + seconds
        while self._timers and self._timers[0][0] <= until:
            at, generation, key = heapq.heappop(self._timers)
            if self._live_timers.get(key) != generation:
                continue  # cancelled or re-set
            del self._live_timers[key]
            self.clock = at
            self.feed(TimerFired(key))
        self.clock = until

    def timer_set(self, key: str) -> bool:
        return key in self._live_timers

    def did(self, kind: str) -> list[tuple[Any, ...]]:
        """The actions of one kind, in order."""
        return [action for action in self.actions if action[0] == kind]

    def last(self, kind: str) -> tuple[Any, ...]:
        found = self.did(kind)
        assert found, f"no {kind!r} among {self.actions}"
        return found[-1]

    # -- CallControl ---------------------------------------------------------------------
    def set_state(self, state: CallState) -> None:
        self.state = state

    def set_timer(self, key: str, seconds: float) -> None:
        generation = next(self._ids)
        self._live_timers[key] = generation
        heapq.heappush(self._timers, (self.clock + seconds, generation, key))

    def cancel_timer(self, key: str) -> None:
        self._live_timers.pop(key, None)

    def dial(self, uri: str, identity: Identity, headers: list[tuple[str, str]]) -> LegId:
        leg = LegId(next(self._ids))
        self.actions.append(("dial", leg, uri, identity, headers))
        return leg

    def cancel(self, leg: LegId, reason: str | None = None) -> None:
        self.actions.append(("cancel", leg))
        self.cancel_reasons[leg] = reason

    def hang_up(self, leg: LegId) -> None:
        self.actions.append(("hang_up", leg))

    def refer(self, leg: LegId, target: str, headers: list[tuple[str, str]]) -> ReferId:
        refer = ReferId(next(self._ids))
        self.actions.append(("refer", refer, leg, target, headers))
        return refer

    def replaces_target(self, leg: LegId) -> str:
        return f"sip:human@pbx?Replaces=consult-{leg}"

    def probe(self, uri: str) -> None:
        self.actions.append(("probe", uri))

    def deliver_webhook(self, handoff: Handoff, kind: WebhookKind) -> None:
        self.actions.append(("webhook", kind))

    def connect_agent(self, target: str, parameters: dict[str, str]) -> AgentId:
        agent = AgentId(next(self._ids))
        self.actions.append(("connect_agent", agent, target, parameters))
        return agent

    def disconnect_agent(self, agent: AgentId) -> None:
        self.actions.append(("disconnect_agent", agent))

    def play_hold(self, leg: LegId) -> None:
        self.actions.append(("hold", leg))

    def play_ringback(self, leg: LegId) -> None:
        self.actions.append(("ringback", leg))

    def play(self, leg: LegId, audio: Samples) -> PlaybackId:
        playback = PlaybackId(next(self._ids))
        self.actions.append(("play", leg, playback))
        return playback

    def synthesize(self, key: str, text: str) -> None:
        self.actions.append(("synthesize", key, text))

    def bridge(self, caller: LegId, human: LegId) -> None:
        self.actions.append(("bridge", caller, human))

    def three_way(self, caller: LegId, human: LegId, introduction: Samples | None
                  ) -> PlaybackId | None:
        playback = PlaybackId(next(self._ids)) if introduction is not None else None
        self.actions.append(("three_way", caller, human, playback))
        return playback

    def detach(self, leg: LegId) -> None:
        self.actions.append(("detach", leg))

    def watch_digits(self, leg: LegId, watch: bool) -> None:
        self.actions.append(("watch_digits", leg, watch))

    def detect_speech(self, leg: LegId) -> None:
        self.actions.append(("detect_speech", leg))

    def start_recording(self, leg: LegId) -> None:
        self.actions.append(("record", leg))

    def save_recording(self, leg: LegId, name: str) -> tuple[str, float]:
        self.actions.append(("save_recording", leg, name))
        return f"/records/voicemail/{name}.wav", 4.0

    def save_callback(self, handoff: Handoff, at: float) -> None:
        self.actions.append(("callback", at))


def start(handoff: Handoff, control: FakeCallControl | None = None,
          announcement: str | None = None) -> tuple[FakeCallControl, list[tuple[str, float]]]:
    """Run ``handoff`` on a fake call; returns the control and the returns to the AI."""
    control = control or FakeCallControl()
    returned: list[tuple[str, float]] = []
    control.run = HandoffRun(control, handoff, lambda why, away: returned.append((why, away)),
                             announcement)
    control.run.start()
    return control, returned


def kinds(handoff: Handoff) -> list[str]:
    return [event.kind for event in handoff.events]
