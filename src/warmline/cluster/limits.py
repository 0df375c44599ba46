"""Concurrency limits per destination and per trunk: a human is never offered two calls at once.

A transfer asks for nothing here: the call's control (transfer/live.py) takes a
hold before it dials a human and releases it when that leg fails or ends; a
destination at its limit is answered as busy (486), so the attempt fails the
usual way and the handoff moves on to its next destination or fallback.

:class:`LocalLimits` keeps the holds in memory (one node); :class:`RedisLimits`
keeps them in Redis as leases in a sorted set per key, taken atomically by a Lua
script under the cap, renewed by the node's heartbeat, so the holds of a node
that died expire on their own. Through a Redis outage it falls back to the
local holds (the limit then holds per node only) and says so in the log.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError

log = logging.getLogger("warmline.cluster")


def destination_key(uri: str) -> str:
    """A destination as the limit counts it: no angle brackets, parameters or headers,
    lower case; so sip:Ann@pbx;transport=tcp and <sip:ann@pbx> are one human."""
    bare = uri.strip().strip("<>")
    return bare.split(";", 1)[0].split("?", 1)[0].lower()


@dataclass(frozen=True)
class LimitTable:
    """How many calls at once each destination and trunk may be offered (0: no limit).

    ``per_destination`` applies to every destination without its own entry.
    """

    per_destination: int = 0
    destinations: Mapping[str, int] = field(default_factory=dict)  # destination_key -> limit
    trunks: Mapping[str, int] = field(default_factory=dict)  # trunk name -> limit

    def for_destination(self, uri: str) -> int:
        return self.destinations.get(destination_key(uri), self.per_destination)

    def for_trunk(self, name: str) -> int:
        return self.trunks.get(name, 0)

    @property
    def any(self) -> bool:
        return bool(self.per_destination or any(self.destinations.values())
                    or any(self.trunks.values()))


@dataclass(frozen=True)
class Hold:
    """One call offered to ``key``, until released. ``shared``: taken in Redis."""

    key: str
    lease: str
    shared: bool = False


class ConcurrencyLimits(Protocol):
    """What the call's control asks before dialling a human, and tells once the leg is over."""

    async def acquire(self, key: str, limit: int) -> Hold | None:
        """A hold on ``key`` if fewer than ``limit`` are held now (across the cluster),
        else None: the destination is busy."""

    async def release(self, hold: Hold) -> None: ...


class LocalLimits:
    """The holds of one node, in memory (no Redis: the default)."""

    def __init__(self) -> None:
        self._held: dict[str, set[str]] = {}
        self._leases = (f"local-{n}" for n in itertools.count(1))

    async def acquire(self, key: str, limit: int) -> Hold | None:
        return self.take(key, limit)

    def take(self, key: str, limit: int) -> Hold | None:
        held = self._held.setdefault(key, set())
        if len(held) >= limit:
            return None
        lease = next(self._leases)
        held.add(lease)
        return Hold(key, lease)

    async def release(self, hold: Hold) -> None:
        held = self._held.get(hold.key)
        if held is not None:
            held.discard(hold.lease)
            if not held:
                del self._held[hold.key]

    def held(self, key: str) -> int:
        return len(self._held.get(key, ()))


# KEYS[1] the key's lease set; ARGV: limit, lease ms, lease id. Redis's own clock, so the
# nodes' clocks need not agree. Expired leases (a dead node's) are dropped first.
ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[3])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""

# KEYS the lease sets; ARGV[1] lease ms, then one lease id per key. ZADD without XX: after
# a Redis restart that lost them, the live holds come back with the next beat.
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ms = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ms, ARGV[i + 1])
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end
return #KEYS
"""


class RedisLimits:
    """Holds shared by every node through Redis, leased for ``lease_seconds`` and renewed
    by :meth:`renew` (the node's heartbeat); ``fallback`` through an outage."""

    def __init__(self, client: Redis, prefix: str, lease_seconds: float,
                 fallback: LocalLimits | None = None) -> None:
        self.client = client
        self.prefix = prefix
        self.lease_ms = int(lease_seconds * 1000)
        self.fallback = fallback or LocalLimits()
        self.node = secrets.token_hex(4)
        self._leases = (f"{self.node}-{n}" for n in itertools.count(1))
        self._held: dict[str, str] = {}  # lease -> its Redis key, while held
        self._acquire = client.register_script(ACQUIRE)
        self._renew = client.register_script(RENEW)

    def _key(self, key: str) -> str:
        return f"{self.prefix}:limit:{key}"

    async def acquire(self, key: str, limit: int) -> Hold | None:
        lease = next(self._leases)
        try:
            taken = await self._acquire(keys=[self._key(key)],
                                        args=[limit, self.lease_ms, lease])
        except (RedisError, OSError) as error:
            log.warning("limit %s: Redis unreachable (%s); counted on this node only",
                        key, error)
            return self.fallback.take(key, limit)
        if not taken:
            return None
        self._held[lease] = self._key(key)
        return Hold(key, lease, shared=True)

    async def release(self, hold: Hold) -> None:
        if not hold.shared:
            await self.fallback.release(hold)
            return
        redis_key = self._held.pop(hold.lease, None)
        if redis_key is None:
            return
        with contextlib.suppress(RedisError, OSError):  # else it expires: no longer renewed
            await self.client.zrem(redis_key, hold.lease)

    async def renew(self) -> None:
        """Extend every hold this node has (RedisError/OSError when Redis is down)."""
        if not self._held:
            return
        leases = list(self._held.items())
        await self._renew(keys=[key for _, key in leases],
                          args=[self.lease_ms, *[lease for lease, _ in leases]])

    @property
    def holding(self) -> int:
        return len(self._held)
