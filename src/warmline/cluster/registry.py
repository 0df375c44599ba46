"""The call registry and handoff contexts in Redis: which node owns which call, and each
handoff's screen-pop, readable from any node.

Each node writes an entry per live call when it starts and deletes it when it
ends; a heartbeat every ``heartbeat`` seconds rewrites the node's own entry and
all its live calls with a TTL of ``3 * heartbeat``, so a dead node's entries
expire on their own and a Redis that restarted empty (or came back after an
outage) holds every live call again after one beat. Writes go through one
queue in order (a call's end never overtakes its start); while Redis is
unreachable they are dropped, not queued without bound: the next good beat
restores the live state, and an ended call's entry expires by its TTL.

Keys (``prefix`` first): ``node:<id>`` (its API URL), ``nodes`` (a set),
``call:<id>`` (owner node and the call as GET /calls shows it), ``calls`` (a set,
pruned of expired entries when read), ``handoff:<id>`` (the handoff as GET
/handoffs/{id} shows it, with its screen-pop token), ``callbacks`` (a hash: each callback
promised, by handoff id, with the node whose book holds it and dials it), and what a
dead node's heir needs (cluster/takeover.py): ``owned:<node>`` and ``legs:<node>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from warmline.cluster.limits import RedisLimits
from warmline.cluster.settings import ClusterSettings
from warmline.cluster.takeover import OrphanCall, callback_key, dead_nodes, inherit, taken

log = logging.getLogger("warmline.cluster")
QUEUE_LIMIT = 10_000  # writes waiting for Redis; past it they are dropped (the beat restores)
Snapshot = Callable[[], list[dict[str, Any]]]
LegSnapshot = Callable[[], dict[str, dict[str, Any]]]  # memo key -> the leg's entry


@dataclass(frozen=True)
class Owner:
    """The node that owns a call, and where its API answers."""

    node: str
    api_url: str | None


def connect(url: str, password: str | None = None, timeout: float = 1.0) -> Redis:
    """A client that fails fast (``timeout`` seconds): a command is retried once, at once,
    only when its connection was found closed (a pooled connection from before a Redis
    restart), else it fails and the heartbeat tries again later."""
    client: Redis = Redis.from_url(url, password=password, socket_timeout=timeout,
                                   socket_connect_timeout=timeout,
                                   retry=Retry(NoBackoff(), 1, (RedisConnectionError,)),
                                   retry_on_error=[RedisConnectionError],
                                   decode_responses=True)
    return client


class SharedState:
    """This node's view of the cluster in Redis; ``available`` says whether Redis answers.

    ``live_calls`` and ``live_handoffs`` give the node's live state at each beat (what it
    re-registers after an outage).
    """

    def __init__(self, settings: ClusterSettings, client: Redis, live_calls: Snapshot,
                 live_handoffs: Snapshot, limits: RedisLimits | None = None,
                 callbacks: Snapshot = list, legs: LegSnapshot = dict) -> None:
        self.settings = settings
        self.node_id = settings.node_id
        self.client = client
        self.limits = limits
        self.live_calls = live_calls
        self.live_handoffs = live_handoffs
        self.callback_rows = callbacks  # this node's promises (rewritten after an outage)
        self.live_legs = legs  # this node's confirmed dialogs (rewritten after an outage)
        # calls a dead node left, handed to the engine to adopt (set by the server)
        self.on_orphans: Callable[[list[OrphanCall]], None] | None = None
        # open callback promises a dead node left (rows as GET /callbacks shows them)
        self.on_orphan_callbacks: Callable[[list[dict[str, Any]]], None] | None = None
        # dialogs of ours another node inherited while our entry had lapsed: memo key ->
        # the heir; the engine lets them go without a BYE (set by the server)
        self.on_taken: Callable[[dict[str, str]], object] | None = None
        # our callback promises another node inherited meanwhile: handoff id -> the heir
        self.on_taken_callbacks: Callable[[dict[str, str]], object] | None = None
        self.open_promises: Callable[[], list[str]] = list  # handoff ids of ours still open
        self.inherited = 0  # calls taken over from dead nodes
        self.available = False  # until the first beat answers
        self._said_down = False  # the outage under way was logged
        self._lapsed = False  # our entry expired; what was taken is not yet let go
        self.registered = asyncio.Event()  # set at the first good beat: no heir can start
        self._prefix = settings.prefix
        self._ttl = int(settings.entry_ttl * 1000)
        self._queue: asyncio.Queue[tuple[str, str, Any]] = asyncio.Queue(QUEUE_LIMIT)
        self._write_lock = asyncio.Lock()  # the beat's rewrite and the queued writes, in turn
        self._tasks: list[asyncio.Task[None]] = []

    def key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._beat_forever()),
                       asyncio.ensure_future(self._write_forever())]

    async def close(self) -> None:
        """Stop beating and take this node's entries out (best effort: they expire anyway)."""
        if self._tasks:
            self._tasks[0].cancel()  # the beat
        if self.available:  # the calls' ends, written before this node's entry goes
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), 2.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        with contextlib.suppress(RedisError, OSError):
            async with self.client.pipeline(transaction=False) as pipe:
                for call in self.live_calls():
                    pipe.delete(self.key("call", str(call["id"])))
                    pipe.srem(self.key("calls"), str(call["id"]))
                # a clean stop hangs its calls up: nothing for an heir to take
                pipe.delete(self.key("owned", self.node_id), self.key("legs", self.node_id))
                pipe.delete(self.key("node", self.node_id))
                pipe.srem(self.key("nodes"), self.node_id)
                await pipe.execute()
        with contextlib.suppress(RedisError, OSError):
            await self.client.aclose()

    # -- what the engine tells ---------------------------------------------------------
    def call_changed(self, call: dict[str, Any]) -> None:
        """A call started or changed state: its entry is written (in order)."""
        self._enqueue("call", str(call["id"]), call)

    def call_gone(self, call_id: str) -> None:
        self._enqueue("gone", call_id, None)

    def call_let_go(self, call_id: str) -> None:
        """A call another node inherited ended here: only our own hash forgets it (its
        ``call:<id>`` entry is the heir's now)."""
        self._enqueue("let-go", call_id, None)

    def handoff_changed(self, handoff: dict[str, Any]) -> None:
        """A handoff was prepared or moved on: its screen-pop and status, for any node."""
        self._enqueue("handoff", str(handoff["id"]), handoff)

    def callback_changed(self, row: dict[str, Any]) -> None:
        """A callback was promised or its dialling moved on (GET /callbacks on any node)."""
        self._enqueue("callback", str(row["handoff_id"]), row)

    def leg_kept(self, memo_key: str, entry: dict[str, Any]) -> None:
        """A dialog of a call confirmed (or changed): what an heir needs to take it over."""
        self._enqueue("leg", memo_key, entry)

    def leg_gone(self, memo_key: str) -> None:
        self._enqueue("leg-gone", memo_key, None)

    async def taken_of(self, memo_keys: list[str]) -> dict[str, str]:
        """Which of these dialogs (an earlier run's, from its journal) another node
        inherited: those are not ours to hang up (ConnectionError when Redis is down)."""
        try:
            return await taken(self.client, self._prefix, memo_keys)
        except RedisError as error:
            raise ConnectionError(f"Redis: {error}") from error

    def _enqueue(self, kind: str, ident: str, value: Any) -> None:
        if not self.available:
            return  # the beat after Redis returns writes the live state
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait((kind, ident, value))

    # -- what the API asks -------------------------------------------------------------
    async def calls(self) -> list[dict[str, Any]]:
        """Every node's live calls, each with its ``node`` (RedisError when down)."""
        ids = sorted(_text(ident) for ident in await self.client.smembers(self.key("calls")))
        if not ids:
            return []
        values = await self.client.mget([self.key("call", ident) for ident in ids])
        gone = [ident for ident, value in zip(ids, values, strict=True) if value is None]
        if gone:
            await self.client.srem(self.key("calls"), *gone)
        return [json.loads(value)["call"] for value in values if value is not None]

    async def owner(self, call_id: str) -> Owner | None:
        """Who owns ``call_id`` now, or None (RedisError when down)."""
        value = await self.client.get(self.key("call", call_id))
        if value is None:
            return None
        entry = json.loads(value)
        return Owner(str(entry["node"]), entry.get("api_url"))

    async def handoff(self, handoff_id: str) -> dict[str, Any] | None:
        value = await self.client.get(self.key("handoff", handoff_id))
        return None if value is None else dict(json.loads(value))

    async def callbacks(self) -> list[dict[str, Any]]:
        """Every node's promises, each with its ``node`` (RedisError when down)."""
        rows = await self.client.hgetall(self.key("callbacks"))
        return [json.loads(value) for value in rows.values()]

    async def nodes(self) -> dict[str, dict[str, Any]]:
        ids = sorted(_text(ident) for ident in await self.client.smembers(self.key("nodes")))
        values = await self.client.mget([self.key("node", n) for n in ids]) if ids else []
        return {n: json.loads(v) for n, v in zip(ids, values, strict=True) if v is not None}

    # -- inside ------------------------------------------------------------------------
    def _call_entry(self, call: dict[str, Any]) -> str:
        return json.dumps({"node": self.node_id, "api_url": self.settings.api_url,
                           "call": {**call, "node": self.node_id}})

    async def _write_forever(self) -> None:
        while True:
            kind, ident, value = await self._queue.get()
            try:
                async with self._write_lock:
                    await self._write(kind, ident, value)
            except (RedisError, OSError) as error:
                self._lost(error)
            finally:
                self._queue.task_done()

    async def _write(self, kind: str, ident: str, value: Any) -> None:
        if kind == "call":
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(self.key("call", ident), self._call_entry(value), px=self._ttl)
                pipe.sadd(self.key("calls"), ident)
                pipe.hset(self.key("owned", self.node_id), ident, json.dumps(value))
                await pipe.execute()
        elif kind == "gone":
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.delete(self.key("call", ident))
                pipe.srem(self.key("calls"), ident)
                pipe.hdel(self.key("owned", self.node_id), ident)
                await pipe.execute()
        elif kind == "let-go":
            await self.client.hdel(self.key("owned", self.node_id), ident)
        elif kind == "leg":
            await self.client.hset(self.key("legs", self.node_id), ident, json.dumps(value))
        elif kind == "leg-gone":
            await self.client.hdel(self.key("legs", self.node_id), ident)
        elif kind == "callback":
            await self.client.hset(self.key("callbacks"), ident,
                                   json.dumps({**value, "node": self.node_id}))
        else:
            entry = json.dumps({**value, "node": self.node_id})
            await self.client.set(self.key("handoff", ident), entry,
                                  px=int(self.settings.handoff_ttl * 1000))

    async def _beat_forever(self) -> None:
        while True:
            try:
                await self.beat()
            except (RedisError, OSError) as error:
                self._lost(error)
            except Exception:  # a torn row or a bug must not stop the beat: a node that
                log.exception("cluster: beat failed")  # stops beating is inherited
            await asyncio.sleep(self.settings.heartbeat)

    async def beat(self) -> None:
        """Refresh this node, its live calls and its limit holds; after an outage (or at
        start) also every live handoff, so nothing is missing once Redis is back."""
        back = not self.available
        node = json.dumps({"api_url": self.settings.api_url, "beat": time.time(),
                           "calls": len(self.live_calls())})
        async with self.client.pipeline(transaction=False) as pipe:
            pipe.set(self.key("node", self.node_id), node, px=self._ttl, get=True)
            pipe.sadd(self.key("nodes"), self.node_id)
            if (await pipe.execute())[0] is None and self.registered.is_set():
                self._lapsed = True  # our entry expired: another node may have our calls
        self.registered.set()  # from now on no heir takes anything of ours
        lapsed = self._lapsed
        if lapsed:  # asked before anything of ours is written again (and until answered)
            await self._let_go_of_what_was_taken()
            self._lapsed = False
        async with self._write_lock:  # queued writes wait: they land after the rewrite
            if back:  # from now on changes are queued, not dropped
                self.available = True
            written = await self._write_back(back, lapsed)
        if back:
            self._said_down = False
            log.info("cluster: Redis answers; node %s registered with %d live call(s)",
                     self.node_id, written)
        if self.limits is not None:
            await self.limits.renew()
        await self._inherit_from_the_dead()

    async def _write_back(self, back: bool, lapsed: bool) -> int:
        """Our live calls' entries; after an outage or a lapse also the hashes an heir
        reads, and after an outage every live handoff and callback promise. How many
        calls."""
        calls = self.live_calls()  # without what was let go
        async with self.client.pipeline(transaction=False) as pipe:
            for call in calls:
                pipe.set(self.key("call", str(call["id"])), self._call_entry(call), px=self._ttl)
                pipe.sadd(self.key("calls"), str(call["id"]))
            if back or lapsed:  # Redis may have restarted empty, or an heir took our hashes
                self._rewrite_heritage(pipe, calls)
            if back:
                for handoff in self.live_handoffs():
                    pipe.set(self.key("handoff", str(handoff["id"])),
                             json.dumps({**handoff, "node": self.node_id}),
                             px=int(self.settings.handoff_ttl * 1000))
                for row in self.callback_rows():
                    pipe.hset(self.key("callbacks"), str(row["handoff_id"]),
                              json.dumps({**row, "node": self.node_id}))
            await pipe.execute()
        return len(calls)

    def _rewrite_heritage(self, pipe: Any, calls: list[dict[str, Any]]) -> None:
        """After an outage (Redis may have restarted empty): the hashes an heir reads."""
        owned, legs = self.key("owned", self.node_id), self.key("legs", self.node_id)
        pipe.delete(owned, legs)
        for call in calls:
            pipe.hset(owned, str(call["id"]), json.dumps(call))
        for memo_key, entry in self.live_legs().items():
            pipe.hset(legs, memo_key, json.dumps(entry))

    async def _let_go_of_what_was_taken(self) -> None:
        """Paused past our TTL (a stall, a partition): the dialogs another node inherited
        meanwhile are its now; ours would fight it with BYEs and re-INVITEs."""
        promises = {callback_key(ident): ident for ident in self.open_promises()}
        heirs = await self.taken_of([*self.live_legs(), *promises])
        heirs = {key: heir for key, heir in heirs.items() if heir != self.node_id}
        dialogs = {key: heir for key, heir in heirs.items() if key not in promises}
        handed = {promises[key]: heir for key, heir in heirs.items() if key in promises}
        if dialogs:
            log.error("cluster: node %s missed its beats; %d dialog(s) were taken over by "
                      "%s and are let go here", self.node_id, len(dialogs),
                      ", ".join(sorted(set(dialogs.values()))))
            if self.on_taken is not None:
                self.on_taken(dialogs)
        if handed:
            log.error("cluster: node %s missed its beats; %d callback(s) it promised are "
                      "kept by another node now", self.node_id, len(handed))
            if self.on_taken_callbacks is not None:
                self.on_taken_callbacks(handed)

    async def _inherit_from_the_dead(self) -> None:
        """Each beat: a node whose entry expired while it had calls up died with them;
        the first node to look takes them (cluster/takeover.py) and adopts each."""
        if self.on_orphans is None:
            return
        for node in await dead_nodes(self.client, self._prefix, self.node_id):
            inheritance = await inherit(self.client, self._prefix, node, self.node_id)
            if inheritance.calls:
                self.inherited += len(inheritance.calls)
                log.warning("cluster: node %s stopped beating with %d call(s) up; taking "
                            "them over", node, len(inheritance.calls))
                self.on_orphans(inheritance.calls)
            if inheritance.callbacks:
                log.warning("cluster: node %s stopped beating with %d callback(s) promised; "
                            "this node keeps them", node, len(inheritance.callbacks))
                if self.on_orphan_callbacks is not None:
                    self.on_orphan_callbacks(inheritance.callbacks)

    def _lost(self, error: Exception) -> None:
        """Said once per outage (and at a start with Redis down), not once per beat."""
        if self.available or not self._said_down:
            log.warning("cluster: Redis unreachable (%s); serving this node's calls alone "
                        "until it returns", error)
        self._said_down = True
        self.available = False


def _text(value: str | bytes) -> str:
    """A member as text (the client decodes; bytes only if someone built it otherwise)."""
    return value.decode() if isinstance(value, bytes) else value
