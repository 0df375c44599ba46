"""The API's request and response bodies, and what they become in the domain.

pydantic checks shape and ranges and names the field at fault in its 422; the
rules a destination must follow live in transfer/handoff.py, shared with the
config file and in-process callers, and are only called from here. Each request
model builds the domain object it stands for (Destination, Handoff, Turn,
CallerId), so the routes never copy fields by hand.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from warmline.brain.service import TurnResult
from warmline.brain.turns import Action, AuthState, Turn
from warmline.calls.recording import RecordingAction, RecordingPhase
from warmline.sip.errors import SipParseError
from warmline.sip.uri import parse_uri
from warmline.transfer.handoff import (
    MAX_GROUP,
    Acceptance,
    CallerId,
    CallerIdMode,
    ConnectBy,
    Destination,
    FallbackAction,
    FallbackKind,
    Handoff,
    TransferMode,
    destination_uri_problem,
    is_agent_uri,
)
from warmline.transfer.outbound import OutboundRequest, Then


class ApiModel(BaseModel):
    """Refuses NaN and infinities (JSON has neither; Python's parser takes them)."""

    model_config = ConfigDict(allow_inf_nan=False)


def _sip_uri(value: str) -> str:
    problem = destination_uri_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def _identity_uri(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        uri = parse_uri(value)
    except SipParseError as error:
        raise ValueError(f"not a sip:, sips: or tel: URI: {error}") from None
    if uri.scheme not in ("sip", "sips", "tel"):
        raise ValueError("must be a sip:, sips: or tel: URI")
    return value


class CallerIdOptions(ApiModel):
    """What the human's phone shows: the caller, another identity, or a trunk number."""

    mode: CallerIdMode = CallerIdMode.ORIGINAL
    uri: str | None = None  # override/trunk: the identity to present (sip:, sips:, tel:)
    diversion: bool = False
    history_info: bool = False
    identity: bool = True  # original mode: pass the caller's Identity header (RFC 8224) on

    _check_uri = field_validator("uri")(classmethod(lambda cls, value: _identity_uri(value)))

    def build(self) -> CallerId:
        """HandoffError when the mode needs a uri that is not given."""
        return CallerId(self.mode, self.uri, self.diversion, self.history_info, self.identity)


class Attempt(ApiModel):
    """Where to send the caller and how (the request itself and each fallback step)."""

    to: str = Field(description="sip:, sips: or tel: URI of the human, queue or agent; or "
                                "another AI agent: ws://, wss:// or agent:NAME (mode agent)",
                    pattern=r"^(sip|sips|tel|ws|wss|agent):", max_length=2048)
    mode: TransferMode | None = Field(
        None, description="blind by default (bridge for a fallback); agent for an agent")
    timeout: float = Field(30.0, gt=0, le=600, description="ring or NOTIFY timeout, seconds")
    whisper: str | None = Field(None, max_length=2000,
                                description="warm/attended: what the human hears first "
                                            "(default: a summary of the context)")
    accept: Acceptance = Field(
        Acceptance.NONE, description="warm: the human accepts by pressing 1 or by speaking first")
    accept_timeout: float = Field(10.0, gt=0, le=120)
    connect: ConnectBy = Field(
        ConnectBy.BRIDGE, description="warm: keep the media (bridge) or send the caller's phone to "
                              "the human with REFER/Replaces when it supports that")

    probe: bool = Field(False, description="OPTIONS first; skip the destination unless 2xx")
    ring_with: list[str] = Field(
        default_factory=list, max_length=MAX_GROUP - 1,
        description="rung at the same time as 'to' (simultaneous ring): the first to answer "
                    "takes the call, the others are cancelled 'Call completed elsewhere'")

    default_mode: ClassVar[TransferMode] = TransferMode.BLIND

    _check_to = field_validator("to")(classmethod(lambda cls, value: _sip_uri(value)))

    @field_validator("ring_with")
    @classmethod
    def _check_group(cls, values: list[str]) -> list[str]:
        for value in values:
            _sip_uri(value)
        return values

    def destination(self) -> Destination:
        mode = self.mode or (TransferMode.AGENT if is_agent_uri(self.to) else self.default_mode)
        return Destination(self.to, mode, self.timeout, self.whisper, self.accept,
                           self.accept_timeout, self.connect, self.probe,
                           tuple(self.ring_with))


class FallbackStep(Attempt):
    """Another destination to try when the one before fails."""

    default_mode: ClassVar[TransferMode] = TransferMode.BRIDGE


class ActionStep(ApiModel):
    """A fallback that is not another destination."""

    action: Literal["ai", "voicemail", "callback"]
    max_seconds: float = Field(60.0, gt=0, le=600, description="voicemail: longest message")
    delay_seconds: float = Field(3600.0, gt=0, le=30 * 86400,
                                 description="callback: when, from now")
    at: float | None = Field(None, description="callback: when, as Unix time")

    def build(self) -> FallbackAction:
        return FallbackAction(FallbackKind(self.action), self.max_seconds, self.delay_seconds,
                              self.at)


class TransferRequest(Attempt):
    final: bool = Field(True, description="False: the caller returns to the AI afterwards")
    announce: str | None = Field(None, max_length=500,
                                 description="said to the caller before the transfer starts")
    fallback: list[FallbackStep | ActionStep | Literal["ai", "voicemail", "callback"]] = Field(
        default_factory=list,
        description="tried in order: other destinations, then 'voicemail', 'callback' or "
                    "'ai' (back to the AI, also what happens when the list runs out)")
    context: dict[str, Any] = Field(default_factory=dict,
                                    description="what the human should know (JSON object)")
    caller_id: CallerIdOptions = Field(default_factory=lambda: CallerIdOptions())

    def handoff(self, call_id: str) -> Handoff:
        """The handoff this request asks for; HandoffError for a caller_id it cannot use
        (the engine checks the rest when the handoff starts)."""
        fallback: list[Destination | FallbackAction | str] = [
            step.destination() if isinstance(step, FallbackStep)
            else step.build() if isinstance(step, ActionStep) else step
            for step in self.fallback]
        return Handoff(call_id, self.destination(), final=self.final, fallback=fallback,
                       context=self.context, caller_id=self.caller_id.build(),
                       announce=self.announce)


class ReturnRequest(ApiModel):
    """What the agent a call was handed to tells the first one as it hands the caller back."""

    report: str = Field("", max_length=500,
                        description="what the first agent hears it did (customParameters)")


class TransferAccepted(ApiModel):
    handoff_id: str
    status: str


class ActionModel(ApiModel):
    name: str = Field(max_length=100)
    result: str = Field(max_length=100, description="ok, failed, partial ...")
    detail: str | None = Field(None, max_length=1000)


class AuthModel(ApiModel):
    verified: bool
    method: str | None = Field(None, max_length=100, description="how, never the values")
    level: str | None = Field(None, max_length=20)


class TurnModel(ApiModel):
    """One conversation turn as the AI reports it."""

    speaker: Literal["caller", "ai"]
    text: str = Field("", max_length=10_000)
    started_at: float | None = None
    ended_at: float | None = None
    intent: str | None = Field(None, max_length=100)
    confidence: float | None = Field(None, ge=0, le=1)
    sentiment: float | None = Field(None, ge=-1, le=1)
    slots: dict[str, Any] = Field(default_factory=dict)
    actions: list[ActionModel] = Field(default_factory=list, max_length=100)
    auth: AuthModel | None = None
    dtmf: str | None = Field(None, pattern=r"^[0-9*#A-D]{1,32}$")
    energy: float | None = Field(None, ge=0, le=100)
    language: str | None = Field(None, max_length=35)
    call_type: str | None = Field(None, max_length=50)

    def build(self) -> Turn:
        return Turn(self.speaker, self.text, self.started_at, self.ended_at, self.intent,
                    self.confidence, self.sentiment, self.slots,
                    tuple(Action(a.name, a.result, a.detail) for a in self.actions),
                    None if self.auth is None else AuthState(self.auth.verified,
                                                             self.auth.method, self.auth.level),
                    self.dtmf, self.energy, self.language, self.call_type)


class TurnAccepted(ApiModel):
    fired: list[dict[str, Any]]
    handoff_id: str | None

    @classmethod
    def of(cls, result: TurnResult) -> TurnAccepted:
        """What the AI is told: the triggers that fired, and the handoff they started."""
        return cls(fired=[{"trigger": f.trigger, "evidence": f.evidence, "turn": f.turn}
                          for f in result.fired],
                   handoff_id=result.handoff.id if result.handoff else None)


class CsatModel(ApiModel):
    score: int = Field(ge=1, le=5, description="1 (very unhappy) to 5 (very happy)")


class ResolutionModel(ApiModel):
    resolved: bool


class RecordingRequest(ApiModel):
    """POST /calls/{id}/recording: start (after the consent), pause, resume or stop."""

    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")
    action: RecordingAction = Field(description="start, pause (card numbers: silence is "
                                                "recorded until resume), resume or stop")
    announce: bool = Field(True, description="start: play the consent announcement first; "
                                             "false when the AI says it itself")


class RecordingStatus(ApiModel):
    call_id: str
    recording: RecordingPhase | None = Field(description="announcing, recording, paused; "
                                                         "null once stopped")


class OutboundCallRequest(ApiModel):
    """``POST /calls``: ring a customer; once they answer, hand them to the AI, a
    department's humans or one destination."""

    to: str = Field(description="the customer: sip:, sips: or tel: URI", max_length=2048,
                    pattern=r"^(sip|sips|tel):")
    trunk: str | None = Field(None, max_length=100,
                              description="through this trunk (default: the first that "
                                          "serves 'to', else directly)")
    caller_id: str | None = Field(None, max_length=2048,
                                  description="our From: [outbound] caller_id (the default) "
                                              "or one of [outbound] caller_ids")
    then: Then = Field(Then.AI, description="who takes the customer once they answer: 'ai' "
                                            "(the bot or flow), 'department', 'destination'")
    department: str | None = Field(None, max_length=100, description="then=department: its name")
    destination: Attempt | None = Field(None, description="then=destination: where and how")
    context: dict[str, Any] = Field(default_factory=dict,
                                    description="what the AI or the human should know")
    announce: str | None = Field(None, max_length=500,
                                 description="said to the customer first, once they answer")
    ring_timeout: float | None = Field(None, gt=0, le=300,
                                       description="seconds of ringing before we give up "
                                                   "(default [outbound] ring_timeout)")
    callback_url: str | None = Field(None, max_length=2048,
                                     description="this call's status events also go here, "
                                                 "signed as [events] are (host must be in "
                                                 "[events] call_url_hosts)")

    _check_to = field_validator("to")(classmethod(lambda cls, value: _sip_uri(value)))
    _check_caller_id = field_validator("caller_id")(
        classmethod(lambda cls, value: _identity_uri(value)))

    @model_validator(mode="after")
    def _then_has_its_target(self) -> OutboundCallRequest:
        if self.then is Then.DEPARTMENT and not self.department:
            raise ValueError("department: needed with then='department'")
        if self.then is Then.DESTINATION and self.destination is None:
            raise ValueError("destination: needed with then='destination'")
        if self.then is not Then.DEPARTMENT and self.department:
            raise ValueError("department: only with then='department'")
        if self.then is not Then.DESTINATION and self.destination is not None:
            raise ValueError("destination: only with then='destination'")
        return self

    def build(self, caller_id: str, ring_timeout: float) -> OutboundRequest:
        return OutboundRequest(
            self.to, self.then, caller_id=self.caller_id or caller_id,
            department=self.department,
            destination=self.destination.destination() if self.destination else None,
            context=self.context, announce=self.announce,
            ring_timeout=self.ring_timeout or ring_timeout, trunk=self.trunk)


class OutboundCallPlaced(ApiModel):
    call_id: str
    state: str
    token: str = Field(description="opens this call's own routes (its bot's media stream)")


class CallEventsRequest(ApiModel):
    """``POST /calls/{id}/events``: this call's status events also go to ``url``."""

    url: str = Field(max_length=2048)
