"""What a transfer may ask of a call, and the events it gets back.

A transfer step (an attempt at a destination, a voicemail, a callback)
never touches sockets, sessions or the event loop. It asks through
:class:`CallControl` (dial a leg, REFER, bridge media, play audio, start a
timer ...) and everything that happens afterwards comes back to it as one
of the events below, in whatever order the network produces them. Like the
SIP core, a step is a state machine driven by events and a clock, so a unit
test can feed it any legal ordering with a fake control and no sockets
(tests/unit/fake_control.py); ``live.py`` implements the same interface over
a real call.

Every request that completes later returns a handle (a leg, a refer, a
playback) and its events carry that handle, so an event about something a
step has already given up on is recognisably stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import NewType, Protocol

from warmline.calls.call import CallState
from warmline.media.player import Samples
from warmline.transfer.handoff import Handoff
from warmline.transfer.identity import Identity

LegId = NewType("LegId", int)  # a leg of the call: the caller's, or one a step dialled
ReferId = NewType("ReferId", int)
PlaybackId = NewType("PlaybackId", int)
AgentId = NewType("AgentId", int)  # a stream to another AI agent, opened by a step


class WebhookKind(StrEnum):
    WEBHOOK = "webhook"  # the packet for the human's desktop, once, before the phone rings
    TICKET = "ticket"  # nobody could be reached: open a ticket with the packet


@dataclass(frozen=True, slots=True)
class CallerFacts:
    """What the caller's INVITE said that a transfer needs to know."""

    allows_refer: bool | None  # None: the INVITE had no Allow header
    supports_replaces: bool
    number: str  # the caller's URI (callbacks)
    party: str  # the caller's From as a name-addr, no tag (the human's caller ID, RFC 3325)
    asserted: str | None  # their P-Asserted-Identity, only from a trusted peer
    dialled: str  # the Request-URI they called: the AI (Diversion, History-Info)
    identity: tuple[str, ...] = ()  # their Identity headers (RFC 8224 PASSporTs), as sent
    privacy: str | None = None  # their Privacy header (RFC 3323)


# -- events ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class CallerHungUp:
    """The caller's leg ended (BYE, CANCEL, a failure): nothing more can reach them."""


@dataclass(frozen=True, slots=True)
class LegProgress:
    """A provisional response on a dialled leg (180 Ringing, 183 ...)."""

    leg: LegId
    status: int


@dataclass(frozen=True, slots=True)
class LegAnswered:
    """A dialled leg answered; ``problem`` says why its SDP answer is unusable, if it is."""

    leg: LegId
    status: int
    problem: str | None = None


@dataclass(frozen=True, slots=True)
class LegFailed:
    """A dialled leg never got answered: a final error, a timeout, or it could not be sent.

    ``unresolved`` names the DNS name that could not be resolved, when that was why.
    """

    leg: LegId
    status: int | None
    reason: str
    unresolved: str | None = None


@dataclass(frozen=True, slots=True)
class LegEnded:
    """An answered leg ended (either side hung up)."""

    leg: LegId


@dataclass(frozen=True, slots=True)
class ReferAnswered:
    """The final response to a REFER (202 Accepted, or a refusal).

    ``subscribed`` False: accepted with Refer-Sub: false (RFC 4488), so no NOTIFY
    will say how the transfer went.
    """

    refer: ReferId
    status: int
    subscribed: bool = True


@dataclass(frozen=True, slots=True)
class ReferNotified:
    """A NOTIFY reporting the referred call's progress (sipfrag status)."""

    refer: ReferId
    status: int
    final: bool


@dataclass(frozen=True, slots=True)
class ProbeAnswered:
    """The final status of an OPTIONS probe (408 when nothing answered in time).

    ``unresolved`` names the DNS name that could not be resolved (status 0, ``reason`` why).
    """

    uri: str
    status: int
    unresolved: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class WebhookDone:
    """The context packet was POSTed (or failed; the handoff's events say which)."""

    kind: WebhookKind
    delivered: bool


@dataclass(frozen=True, slots=True)
class SpeechReady:
    """Text asked for with :meth:`CallControl.synthesize`; ``audio`` None when TTS failed."""

    key: str
    audio: Samples | None
    error: str | None = None


@dataclass(frozen=True, slots=True)
class PlaybackEnded:
    """Audio played once has ended (or was replaced by something else)."""

    playback: PlaybackId


@dataclass(frozen=True, slots=True)
class DigitPressed:
    """A DTMF digit from a leg whose digits are watched (RFC 4733 or SIP INFO)."""

    leg: LegId
    digit: str


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The first word from a leg asked about with :meth:`CallControl.detect_speech`."""

    leg: LegId


@dataclass(frozen=True, slots=True)
class TimerFired:
    key: str


@dataclass(frozen=True, slots=True)
class AgentConnected:
    """The other agent's WebSocket is open and its ``start`` (with the context) went out."""

    agent: AgentId


@dataclass(frozen=True, slots=True)
class AgentFailed:
    """The other agent could not be reached (refused, no answer, an unknown name)."""

    agent: AgentId
    reason: str


@dataclass(frozen=True, slots=True)
class AgentEnded:
    """The other agent's stream ended after it connected.

    ``handed_back`` True: the agent ended its part on purpose (it closed the
    socket with code 1000, or asked over REST: POST /calls/{id}/return), and
    ``report`` is what it said (the close reason, or the request's summary).
    False: it dropped (an error, an abnormal close, a broken protocol).
    """

    agent: AgentId
    handed_back: bool
    report: str = ""


TransferEvent = (CallerHungUp | LegProgress | LegAnswered | LegFailed | LegEnded
                 | ReferAnswered | ReferNotified | ProbeAnswered | WebhookDone | SpeechReady
                 | PlaybackEnded | DigitPressed | SpeechStarted | TimerFired
                 | AgentConnected | AgentFailed | AgentEnded)


class CallControl(Protocol):
    """Everything a transfer step may ask of the call it works on.

    Calls return at once; whatever completes later arrives as an event.
    """

    @property
    def caller(self) -> LegId:
        """The caller's leg."""

    @property
    def caller_facts(self) -> CallerFacts: ...

    @property
    def caller_gone(self) -> bool:
        """True once the caller's leg has ended."""

    def set_state(self, state: CallState) -> None:
        """What the call is doing now (the API and the agents read it)."""

    # -- timers ---------------------------------------------------------------
    def set_timer(self, key: str, seconds: float) -> None:
        """:class:`TimerFired` ``key`` after ``seconds`` (an earlier one by that key goes)."""

    def cancel_timer(self, key: str) -> None: ...

    # -- signalling -----------------------------------------------------------
    def dial(self, uri: str, identity: Identity, headers: list[tuple[str, str]]) -> LegId:
        """Open a media leg and INVITE ``uri`` (the caller's codec offered first).

        Then :class:`LegProgress`, and :class:`LegAnswered` or :class:`LegFailed`.
        """

    def cancel(self, leg: LegId, reason: str | None = None) -> None:
        """CANCEL a dialled leg that has not answered (a BYE if it answered meanwhile);
        ``reason`` a Reason header (RFC 3326) for it."""

    def hang_up(self, leg: LegId) -> None:
        """End ``leg`` (BYE, or CANCEL before an answer) and close its media."""

    def refer(self, leg: LegId, target: str, headers: list[tuple[str, str]]) -> ReferId:
        """REFER ``leg``'s far end to ``target`` (a URI, its headers included) with
        Referred-By; then :class:`ReferAnswered` and :class:`ReferNotified`."""

    def replaces_target(self, leg: LegId) -> str:
        """A Refer-To URI that sends a phone to ``leg``'s far end replacing ``leg``'s
        dialog (RFC 3891)."""

    def probe(self, uri: str) -> None:
        """OPTIONS ``uri``; then :class:`ProbeAnswered`."""

    def deliver_webhook(self, handoff: Handoff, kind: WebhookKind) -> None:
        """POST the packet to the desk's webhook; then :class:`WebhookDone`."""

    def connect_agent(self, target: str, parameters: dict[str, str]) -> AgentId:
        """Stream the caller to another AI agent: ``target`` a ws:// or wss:// URL or
        agent:NAME, ``parameters`` its ``start.customParameters`` (the context).

        Then :class:`AgentConnected` or :class:`AgentFailed`, and :class:`AgentEnded`.
        """

    def disconnect_agent(self, agent: AgentId) -> None:
        """Send the agent ``stop`` and close its stream: it no longer has the call."""

    # -- media ------------------------------------------------------------------
    def play_hold(self, leg: LegId) -> None:
        """Hold audio on ``leg``, looped, until something else is played or bridged."""

    def play_ringback(self, leg: LegId) -> None: ...

    def play(self, leg: LegId, audio: Samples) -> PlaybackId:
        """Play ``audio`` once on ``leg``; then :class:`PlaybackEnded`."""

    def synthesize(self, key: str, text: str) -> None:
        """Speech for ``text``, off the event loop; then :class:`SpeechReady` ``key``."""

    def bridge(self, caller: LegId, human: LegId) -> None:
        """Each leg hears the other (hold audio goes on until the human's audio flows)."""

    def three_way(self, caller: LegId, human: LegId, introduction: Samples | None
                  ) -> PlaybackId | None:
        """Join both in a mix and say ``introduction`` to both; :class:`PlaybackEnded`
        when it ends. :meth:`bridge` later takes them out of the mix."""

    def detach(self, leg: LegId) -> None:
        """``leg`` hears nothing and goes nowhere (the AI takes it over)."""

    def watch_digits(self, leg: LegId, watch: bool) -> None:
        """:class:`DigitPressed` for ``leg``'s digits while ``watch`` is True."""

    def detect_speech(self, leg: LegId) -> None:
        """:class:`SpeechStarted` once, at the far end's first word."""

    def start_recording(self, leg: LegId) -> None:
        """Keep what ``leg``'s far end says (voicemail)."""

    def save_recording(self, leg: LegId, name: str) -> tuple[str, float]:
        """Stop recording ``leg`` and write it as ``name``.wav; its path and seconds."""

    def save_callback(self, handoff: Handoff, at: float) -> None:
        """Keep a callback promise durably (it must survive a crash)."""
