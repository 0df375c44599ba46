"""What an agent may ask of the engine that hands it calls.

Agents sit below the engine that composes everything, so they name only
what they use; :class:`warmline.engine.CallEngine` provides it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Protocol

from warmline.brain.service import TurnResult
from warmline.brain.turns import Turn
from warmline.calls.call import Call
from warmline.media.player import Samples
from warmline.media.tts import TextToSpeech
from warmline.transfer.handoff import Handoff


class AgentHost(Protocol):
    @property
    def tts(self) -> TextToSpeech: ...

    def hold_audio(self) -> Samples:
        """What a caller hears while nobody speaks to them."""

    def spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` in the background until the engine closes."""

    def add_turn(self, call_id: str, turn: Turn) -> TurnResult: ...

    def transfer(self, call_id: str, handoff: Handoff) -> Handoff: ...

    def escalate(self, call_id: str, reason: str,
                 context: dict[str, Any] | None = None) -> Handoff: ...

    def hang_up(self, call: Call) -> None: ...

    def answer(self, call: Call) -> None:
        """Answer a call that rings with early media until its AI is ready (else nothing)."""
