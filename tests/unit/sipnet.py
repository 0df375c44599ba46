"""An in-memory network of sans-IO user agents driven by one fake clock."""

from __future__ import annotations

from collections.abc import Callable

from warmline.sip.events import Target, Transmit
from warmline.sip.session import SessionEvent
from warmline.sip.useragent import UserAgent

Drop = Callable[[Transmit], bool]


class FakeNet:
    """Delivers each UA's transmissions to the UA listening at the target address."""

    def __init__(self) -> None:
        self.now = 0.0
        self.agents: dict[tuple[str, int], UserAgent] = {}
        self.events: dict[int, list[SessionEvent]] = {}
        self.wire: list[tuple[float, tuple[str, int], Transmit]] = []
        self.drop: Drop = lambda transmit: False
        self.outside: list[Transmit] = []  # sent to an address nobody listens on

    def add(self, agent: UserAgent, host: str, port: int) -> UserAgent:
        agent.add_listener("udp", host, port)
        self.agents[(host, port)] = agent
        self.events[id(agent)] = []
        return agent

    def address_of(self, agent: UserAgent) -> tuple[str, int]:
        return next(addr for addr, a in self.agents.items() if a is agent)

    def flush(self) -> None:
        """Deliver until nothing is in flight (no time passes)."""
        moved = True
        while moved:
            moved = False
            for address, agent in list(self.agents.items()):
                for transmit in agent.pop_transmissions():
                    moved = True
                    self.wire.append((self.now, address, transmit))
                    if self.drop(transmit):
                        continue
                    receiver = self.agents.get((transmit.target.host, transmit.target.port))
                    if receiver is None:
                        self.outside.append(transmit)
                        continue
                    source = Target("udp", address[0], address[1])
                    receiver.receive(transmit.data, source, self.now)
                self.events[id(agent)].extend(agent.pop_events())

    def advance(self, seconds: float) -> None:
        """Run every timer due within ``seconds``, delivering as time moves."""
        end = self.now + seconds
        self.flush()
        while True:
            deadlines = [d for a in self.agents.values() if (d := a.next_deadline()) is not None]
            due = min(deadlines, default=None)
            if due is None or due > end:
                break
            self.now = max(self.now, due)
            for agent in self.agents.values():
                agent.handle_timer(self.now)
            self.flush()
        self.now = end

    def take(self, agent: UserAgent) -> list[SessionEvent]:
        self.flush()
        out, self.events[id(agent)] = self.events[id(agent)], []
        return out

    def sent_by(self, agent: UserAgent, start: bytes) -> list[Transmit]:
        sender = self.address_of(agent)
        return [t for _, a, t in self.wire if a == sender and t.data.startswith(start)]
