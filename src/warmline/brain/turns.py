"""What the AI reports after each conversation turn: the raw material of every decision.

The AI knows what it heard and what it tried; warmline decides when that
calls for a human and what the human must learn. A turn carries the words
(with times), the AI's reading of them (intent, confidence, sentiment), the
slots gathered, the actions tried with their results, the authentication
state (what was verified and how, never the secret itself), caller DTMF, and
optionally the caller's loudness relative to their own start (energy).

The brain keeps only :meth:`Turn.redacted` copies: the triggers look for
words about people and feelings and compare amounts, never the digits of a
card or a code, so nothing the caller read out is held where a log line, the
trigger log or a packet could pick it up.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from warmline.brain.redact import redact, redact_value

SPEAKERS = ("caller", "ai")


@dataclass(frozen=True)
class Action:
    name: str
    result: str  # "ok", "failed", "partial" ... as the AI reports it
    detail: str | None = None


@dataclass(frozen=True)
class AuthState:
    verified: bool
    method: str | None = None  # "dob+postcode", "otp", "voiceprint" ... never the values
    level: str | None = None  # "none", "partial", "full"


@dataclass(frozen=True)
class Turn:
    speaker: str
    text: str = ""
    started_at: float | None = None
    ended_at: float | None = None
    intent: str | None = None
    confidence: float | None = None  # the AI's intent confidence, 0..1
    sentiment: float | None = None  # the AI's own sentiment reading, -1..1, if it has one
    slots: dict[str, Any] = field(default_factory=dict)
    actions: tuple[Action, ...] = ()
    auth: AuthState | None = None
    dtmf: str | None = None  # digits the caller pressed (a turn of its own)
    energy: float | None = None  # loudness vs the caller's own baseline (1.0 = as usual)
    language: str | None = None
    call_type: str | None = None

    def __post_init__(self) -> None:
        if self.speaker not in SPEAKERS:
            raise ValueError(f"speaker: {self.speaker!r} is not one of {', '.join(SPEAKERS)}")
        if self.confidence is not None and not 0 <= self.confidence <= 1:
            raise ValueError(f"confidence: {self.confidence} is not in [0, 1]")
        if self.sentiment is not None and not -1 <= self.sentiment <= 1:
            raise ValueError(f"sentiment: {self.sentiment} is not in [-1, 1]")

    def redacted(self) -> Turn:
        """This turn with its free text (words, slots, actions, how the caller was
        verified) redacted; the keys pressed stay, for the 0 that asks for a person."""
        auth = self.auth
        if auth is not None and auth.method:
            auth = replace(auth, method=redact(auth.method))
        return replace(self, text=redact(self.text), slots=redact_value(self.slots),
                       actions=tuple(Action(redact(a.name), redact(a.result),
                                            None if a.detail is None else redact(a.detail))
                                     for a in self.actions), auth=auth)
