"""The streams to the agents a call is handed to: another bot's WebSocket, opened on request.

A transfer with mode agent asks its control to ``connect_agent``; the
control (transfer/live.py) asks this, which does the socket work the
transfer layer must not: it resolves ``agent:NAME`` through the config's
``[agents.NAME]``, opens the WebSocket (bounded by the agent's connect
timeout), serves the call's media over it in Twilio Media Streams framing
with the context in ``start.customParameters`` (agents/media_stream.py),
and reports back as transfer events: connected or failed, and how the
stream ended. The stream that opens takes the call from the previous
agent's (the call's ``agent_turn``), which gets ``stop``.

An agent hands the caller back by closing its socket with code 1000 (its
close reason is its report) or with POST /calls/{id}/return (:meth:`hand_back`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import websockets
from websockets.exceptions import InvalidHandshake, InvalidURI

from warmline.agents.host import AgentHost
from warmline.agents.media_stream import CallStream, StreamEnd, close_quietly, serve_stream
from warmline.brain.redact import redact
from warmline.calls.call import Call
from warmline.transfer.control import (
    AgentConnected,
    AgentEnded,
    AgentFailed,
    AgentId,
    TransferEvent,
)

log = logging.getLogger("warmline.agents")
DEFAULT_CONNECT_SECONDS = 5.0


@dataclass(frozen=True)
class AgentSpec:
    """An agent a call may be handed to by name (``[agents.NAME]``): agent:NAME."""

    url: str  # ws:// or wss://
    connect_timeout: float = DEFAULT_CONNECT_SECONDS


Report = Callable[[TransferEvent], None]


class AgentStreams:
    """Opens, serves and closes the streams to the agents calls are handed to."""

    def __init__(self, host: AgentHost, agents: Mapping[str, AgentSpec] | None = None, *,
                 max_message: int = 65_536, audio_seconds: float = 120.0) -> None:
        self.host = host
        self.agents: dict[str, AgentSpec] = dict(agents or {})
        self.max_message = max_message
        self.audio_seconds = audio_seconds
        self.api_url: str | None = None  # warmline's HTTP API, told to the bot (return)
        self._streams: dict[tuple[str, AgentId], CallStream | None] = {}  # None: connecting
        self._let_go: set[tuple[str, AgentId]] = set()  # closed before it connected

    def known(self, name: str) -> bool:
        return name in self.agents

    def open(self, call: Call, target: str, parameters: dict[str, str], agent: AgentId,
             report: Report) -> None:
        """Connect ``call`` to the agent at ``target`` (a URL or agent:NAME); ``report``
        hears AgentConnected or AgentFailed, then AgentEnded."""
        url, timeout = self._where(target)
        if url is None:
            report(AgentFailed(agent, f"no [agents.{target.partition(':')[2]}] configured"))
            return
        self._streams[(call.id, agent)] = None
        self.host.spawn(self._session(call, url, timeout, parameters, agent, report))

    def close(self, call: Call, agent: AgentId) -> None:
        """The transfer let the agent go: ``stop`` and close, or never connect at all."""
        key = (call.id, agent)
        if key not in self._streams:
            return
        stream = self._streams[key]
        if stream is None:
            self._let_go.add(key)
        else:
            stream.dismissed = True  # its watcher sends stop and closes

    def hand_back(self, call: Call, report: str) -> bool:
        """POST /calls/{id}/return: the agent that has ``call`` ends its part. False when
        no agent a call was handed to has it."""
        for (call_id, _), stream in self._streams.items():
            if call_id == call.id and stream is not None and stream.owner:
                stream.hand_back(report)
                return True
        return False

    def _where(self, target: str) -> tuple[str | None, float]:
        if target.lower().startswith("agent:"):
            spec = self.agents.get(target.partition(":")[2])
            return (spec.url, spec.connect_timeout) if spec else (None, 0.0)
        return target, DEFAULT_CONNECT_SECONDS

    async def _session(self, call: Call, url: str, timeout: float,
                       parameters: dict[str, str], agent: AgentId, report: Report) -> None:
        key = (call.id, agent)
        try:
            try:
                socket = await websockets.connect(url, open_timeout=timeout,
                                                  max_size=self.max_message)
            except (OSError, InvalidHandshake, InvalidURI, TimeoutError) as error:
                log.warning("call %s: agent at %s unreachable (%s)", call.id,
                            urlsplit(url)._replace(query="").geturl(), error,
                            extra={"call_id": call.id})  # a token in the query is not logged
                report(AgentFailed(agent, str(error)[:200] or type(error).__name__))
                return
            if key in self._let_go or call.ended:  # given up while it was connecting
                await close_quietly(socket, 1000, "")
                return
            stream = CallStream(call, socket, self.audio_seconds, self.api_url, parameters,
                                awaits_ai=True)
            self._streams[key] = stream
            report(AgentConnected(agent))
            end = await serve_stream(self.host, stream)
            if not end.displaced:
                report(_ended(agent, end))
        finally:
            self._streams.pop(key, None)
            self._let_go.discard(key)


def _ended(agent: AgentId, end: StreamEnd) -> AgentEnded:
    """What the transfer hears; the agent's report redacted at this door, as the words
    of turns are, before any record, event or other agent sees it."""
    return AgentEnded(agent, handed_back=end.handed_back, report=redact(end.report))
