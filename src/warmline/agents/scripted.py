"""The built-in scripted agent: a small flow file for IVR-style calls and for tests.

A flow is a set of named steps in TOML. Each step may say text (TTS) or
play a WAV, gather DTMF digits into a slot, set slots, and then go on:
to the next step by the digits gathered (with a default), to a transfer,
to an escalation (the engine's routing and context, as a trigger would),
or hang up. Every reference is checked when the flow is loaded, so a typo
is an error naming the step, not a silent dead end in a live call.

    start = "menu"
    [steps.menu]
    say = "Press 1 for billing, or 0 for a person."
    gather = { digits = 1, timeout = 6, slot = "choice" }
    next = { "1" = "billing", "0" = "person", default = "menu" }
    [steps.billing]
    say = "Connecting you to billing."
    transfer = { to = "sip:billing@pbx.example", mode = "warm" }
    [steps.person]
    escalate = "the caller asked for a person"
"""

from __future__ import annotations

import asyncio
import logging
import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from warmline.agents.host import AgentHost
from warmline.brain.turns import Turn
from warmline.calls.call import Call, CallState
from warmline.media.player import AudioFileError, Player, Samples, load_wav
from warmline.media.tts import TtsError
from warmline.transfer.handoff import (
    Destination,
    Handoff,
    HandoffError,
    TransferMode,
    is_agent_uri,
)

MAX_STEPS = 200  # a flow that loops forever still ends
log = logging.getLogger("warmline.agents")


class FlowError(ValueError):
    """A flow file that cannot run; the message names the step and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Gather(_Strict):
    digits: int = Field(1, ge=1, le=32)
    timeout: float = Field(6.0, gt=0, le=60)
    slot: str = "digits"


class TransferStep(_Strict):
    to: str  # a human's URI, or another agent: ws://, wss://, agent:NAME
    mode: TransferMode | None = None  # warm for a human, agent for an agent
    timeout: float = Field(30, gt=0, le=600)

    def destination(self) -> Destination:
        mode = self.mode or (TransferMode.AGENT if is_agent_uri(self.to) else TransferMode.WARM)
        return Destination(self.to, mode, self.timeout)


class Step(_Strict):
    say: str | None = Field(None, max_length=2000)
    play: str | None = None
    gather: Gather | None = None
    set: dict[str, str] = Field(default_factory=dict)
    next: str | dict[str, str] | None = None
    transfer: TransferStep | None = None
    escalate: str | None = None
    hangup: bool = False


class Flow(_Strict):
    start: str
    steps: dict[str, Step] = Field(min_length=1)

    @model_validator(mode="after")
    def _references(self) -> Flow:
        def check(where: str, name: str) -> None:
            if name not in self.steps:
                raise ValueError(f"{where}: no step named {name!r}")

        check("start", self.start)
        for name, step in self.steps.items():
            targets = [step.next] if isinstance(step.next, str) else \
                list((step.next or {}).values())
            for target in targets:
                check(f"steps.{name}.next", target)
            endings = [step.next is not None, step.transfer is not None,
                       step.escalate is not None, step.hangup]
            if sum(endings) != 1:
                raise ValueError(f"steps.{name}: needs exactly one of next, transfer, "
                                 f"escalate or hangup")
            if step.transfer is not None:
                try:
                    step.transfer.destination().validate(f"steps.{name}.transfer.to")
                except HandoffError as error:
                    raise ValueError(str(error)) from None
        return self


def _still_ours(call: Call, turn: int) -> bool:
    """The call is live, with the AI, and no other agent's stream took it (a handoff to
    another agent sets the AI state again once that agent is there)."""
    return not call.ended and call.state is CallState.AI and call.agent_turn == turn


def load_flow(path: Path) -> Flow:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
        flow = Flow.model_validate(raw)
    except OSError as error:
        raise FlowError(f"{path}: cannot read: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise FlowError(f"{path}: not valid TOML: {error}") from None
    except ValidationError as error:
        problems = [f"{'.'.join(str(p) for p in item['loc']) or 'flow'}: {item['msg']}"
                    for item in error.errors()]
        raise FlowError(f"{path}: " + "; ".join(problems)) from None
    for name, step in flow.steps.items():
        if step.play is not None:
            try:
                load_wav(Path(step.play), 8000)
            except AudioFileError as error:
                raise FlowError(f"{path}: steps.{name}.play: {error}") from None
    return flow


class ScriptedAgent:
    """Runs ``flow`` on every call the engine hands it."""

    def __init__(self, engine: AgentHost, flow: Flow) -> None:
        self.engine = engine
        self.flow = flow
        self.audio: dict[str, Samples] = {}

    def on_call(self, call: Call) -> None:
        self.engine.spawn(self.run(call))

    async def run(self, call: Call) -> None:
        call.agent_turn += 1  # the flow is the call's agent now (a bot's stream would stop)
        turn = call.agent_turn
        name: str | None = self.flow.start
        slots: dict[str, str] = {}
        for _ in range(MAX_STEPS):
            if name is None or not _still_ours(call, turn):
                return
            name = await self._step(call, name, self.flow.steps[name], slots, turn)

    async def _step(self, call: Call, name: str, step: Step, slots: dict[str, str],
                    turn: int) -> str | None:
        await self._speak(call, step)
        if step.gather is not None:
            slots[step.gather.slot] = await self._gather(call, step.gather)
        if not _still_ours(call, turn):
            return None  # the caller left, or a digit (0) started a handoff meanwhile
        slots.update(step.set)
        if step.transfer is not None or step.escalate is not None:
            self._hand_over(call, name, step, {"flow_step": name, **slots})
            return None
        if step.hangup:
            self.engine.hang_up(call)
            return None
        if isinstance(step.next, str):
            return step.next
        choices = step.next or {}
        gathered = slots.get(step.gather.slot, "") if step.gather else ""
        return choices.get(gathered, choices.get("default"))

    def _hand_over(self, call: Call, name: str, step: Step, context: dict[str, str]) -> None:
        """The step's transfer or escalation; one the engine refuses is logged, not raised."""
        try:
            if step.transfer is not None:
                destination = step.transfer.destination()
                self.engine.transfer(call.id, Handoff(call.id, destination, fallback=["ai"],
                                                      context=context))
            elif step.escalate is not None:
                self.engine.escalate(call.id, step.escalate, context)
        except HandoffError as error:
            log.warning("call %s: flow step %s cannot hand the call over: %s", call.id, name,
                        error, extra={"call_id": call.id})

    async def _speak(self, call: Call, step: Step) -> None:
        samples = None
        if step.play is not None:
            samples = load_wav(Path(step.play), 8000)
        elif step.say is not None:
            samples = self.audio.get(step.say)
            if samples is None:
                loop = asyncio.get_running_loop()
                try:
                    samples = await loop.run_in_executor(None, self.engine.tts.synthesize,
                                                         step.say)
                except TtsError:
                    return
                self.audio[step.say] = samples
        if samples is not None and not call.ended:
            await call.caller.media.play(Player(samples)).done
            if step.say and not call.ended:
                self.engine.add_turn(call.id, Turn("ai", step.say))

    async def _gather(self, call: Call, gather: Gather) -> str:
        digits: list[str] = []
        enough = asyncio.get_running_loop().create_future()

        def pressed(digit: str) -> None:
            digits.append(digit)
            if len(digits) >= gather.digits and not enough.done():
                enough.set_result(None)

        call.on_dtmf = pressed
        try:
            await asyncio.wait_for(enough, gather.timeout)
        except TimeoutError:
            pass
        finally:
            call.on_dtmf = None
        return "".join(digits[:gather.digits])
