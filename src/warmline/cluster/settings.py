"""[cluster]: this node's name, the Redis its nodes share, and how other nodes reach its API."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

DEFAULT_PREFIX = "warmline"


def default_node_id() -> str:
    """hostname-pid: unique on one machine and across machines, readable in logs."""
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class ClusterSettings:
    """``redis_url`` None: one node, everything in this process's memory (the default).

    ``heartbeat``: seconds between two refreshes of this node's entries; each entry lives
    ``3 * heartbeat`` seconds (at least 1), so a dead node's calls and limit holds expire
    that long after its last beat. ``handoff_ttl``: how long a handoff's screen-pop stays
    readable from any node.
    """

    node_id: str
    redis_url: str | None = None
    api_url: str | None = None  # None: the node's own --http URL
    prefix: str = DEFAULT_PREFIX
    heartbeat: float = 2.0
    handoff_ttl: float = 86_400.0
    redis_password: str | None = field(default=None, repr=False)  # AUTH; never logged

    @property
    def entry_ttl(self) -> float:
        return max(1.0, 3 * self.heartbeat)
