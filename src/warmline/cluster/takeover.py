"""Taking over a dead node's calls: what each node keeps in Redis so another can, and the
atomic hand-over that makes exactly one node the heir.

Every node keeps two hashes without a TTL (they must outlive it): ``owned:<node>``
(each live call as GET /calls shows it, its state included) and ``legs:<node>``
(each confirmed dialog of those calls: the dialog memo a BYE or re-INVITE needs,
which call and leg it belongs to, the codec and SDP origin in use). A node whose
``node:<id>`` entry expired (no beat for ``3 * heartbeat``) while these hashes
remain died with calls up. The first live node to see it reads and deletes both
hashes (after claiming the dead node with ``takeover:<node>``, set if not set), so
exactly one node inherits each call however many look at once, together with the
dead node's open callback promises (the ``callbacks`` hash names each one's node),
and marks every dialog it took in ``taken:<memo key>`` and every promise in
``taken:callback:<handoff id>`` for a day: the dead node's next run (its dialog
journal and callback book still list them) and a node that was only paused past
its TTL (it comes back believing it owns them) both ask there first and let go
instead of hanging the calls up or dialling the customers twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

TAKEN_TTL_MS = 86_400_000  # a dead node's run may restart a day later and read its journal
CLAIM_MS = 30_000  # one heir per death: the others looking at once see the claim
CLOSED_PROMISES = frozenset({"kept", "failed"})


@dataclass
class OrphanCall:
    """A call a dead node owned, as it last wrote it: the call's row and its dialogs."""

    node: str
    call: dict[str, Any]
    legs: list[dict[str, Any]] = field(default_factory=list)  # each: role, memo, inbound...

    @property
    def call_id(self) -> str:
        return str(self.call.get("id", ""))


@dataclass
class Inheritance:
    """What one heir takes from one dead node."""

    calls: list[OrphanCall] = field(default_factory=list)
    callbacks: list[dict[str, Any]] = field(default_factory=list)  # open promises' rows


def callback_key(handoff_id: str) -> str:
    """A promise's name among the ``taken`` keys."""
    return f"callback:{handoff_id}"


def _key(prefix: str, *parts: str) -> str:
    return ":".join((prefix, *parts))


async def dead_nodes(client: Redis, prefix: str, me: str) -> list[str]:
    """Nodes listed in ``nodes`` whose beat entry has expired (never ``me``)."""
    members = sorted(_text(n) for n in await client.smembers(_key(prefix, "nodes")))
    others = [node for node in members if node != me]
    if not others:
        return []
    beats = await client.mget([_key(prefix, "node", node) for node in others])
    return [node for node, beat in zip(others, beats, strict=True) if beat is None]


async def inherit(client: Redis, prefix: str, node: str, heir: str) -> Inheritance:
    """Take ``node``'s calls and open callback promises for ``heir`` (nothing when another
    node claimed it first, or it died with nothing open)."""
    if not await client.set(_key(prefix, "takeover", node), heir, nx=True, px=CLAIM_MS):
        return Inheritance()
    async with client.pipeline(transaction=True) as pipe:
        pipe.hgetall(_key(prefix, "owned", node))
        pipe.hgetall(_key(prefix, "legs", node))
        pipe.delete(_key(prefix, "owned", node), _key(prefix, "legs", node))
        pipe.srem(_key(prefix, "nodes"), node)
        pipe.hgetall(_key(prefix, "callbacks"))
        owned, legs, _, _, promised = await pipe.execute()
    callbacks = [row for row in map(json.loads, promised.values())
                 if row.get("node") == node and row.get("state") not in CLOSED_PROMISES]
    orphans = {ident: OrphanCall(node, json.loads(row)) for ident, row in owned.items()}
    for memo_key, row in legs.items():
        leg = json.loads(row)
        orphan = orphans.get(str(leg.get("call")))
        if orphan is None:  # a leg whose call row is missing: still a dialog to end
            orphan = orphans[f"leg:{memo_key}"] = OrphanCall(node, {"id": leg.get("call")})
        orphan.legs.append(leg)
    taken = [str(leg["memo_key"]) for orphan in orphans.values() for leg in orphan.legs]
    taken += [callback_key(str(row["handoff_id"])) for row in callbacks]
    if taken:
        async with client.pipeline(transaction=False) as pipe:
            for memo_key in taken:
                pipe.set(_key(prefix, "taken", memo_key), heir, px=TAKEN_TTL_MS)
            await pipe.execute()
    return Inheritance(list(orphans.values()), callbacks)


async def taken(client: Redis, prefix: str, memo_keys: list[str]) -> dict[str, str]:
    """Which of ``memo_keys`` another node inherited, and which node."""
    if not memo_keys:
        return {}
    heirs = await client.mget([_key(prefix, "taken", key) for key in memo_keys])
    return {key: _text(heir) for key, heir in zip(memo_keys, heirs, strict=True)
            if heir is not None}


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
