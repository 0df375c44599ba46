"""Taking over a dead node's calls: what each node keeps in Redis so another can, and the
atomic hand-over that makes exactly one node the heir.

Every node keeps two hashes without a TTL (they must outlive it): ``owned:<node>``
(each live call as GET /calls shows it, its state included) and ``legs:<node>``
(each confirmed dialog of those calls: the dialog memo a BYE or re-INVITE needs,
which call and leg it belongs to, the codec and SDP origin in use). A node whose
``node:<id>`` entry expired (no beat for ``3 * heartbeat``) while these hashes
remain died with calls up. The first live node to see it runs one Lua script
(atomic in Redis) that checks the node's entry is still absent, reads and deletes
both hashes, takes the dead node's open callback promises (the ``callbacks`` hash
names each one's node) and marks every dialog it took in ``taken:<memo key>`` and
every promise in ``taken:callback:<handoff id>`` for a day. One script, so there
is no moment where the calls are gone from the hashes but not yet marked, and
exactly one node inherits each call however many look at once. The dead node's
next run (its dialog journal and callback book still list them) and a node that
was only paused past its TTL (it comes back believing it owns them) both ask the
marks once their entry is written again (from then on no script takes anything)
and let go instead of hanging the calls up or dialling the customers twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis

TAKEN_TTL_MS = 86_400_000  # a dead node's run may restart a day later and read its journal

# KEYS: node:<dead>, nodes, owned:<dead>, legs:<dead>, callbacks
# ARGV: dead node, heir, the taken: key prefix, the marks' TTL in ms
# A promise is the dead node's when a taken mark names it (it inherited the promise, its
# row may still name the node before), or when no mark exists and its row names it (a mark
# naming another node: that node took it). Rows that are not JSON objects are left alone.
INHERIT_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local owned = redis.call('HGETALL', KEYS[3])
local legs = redis.call('HGETALL', KEYS[4])
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('SREM', KEYS[2], ARGV[1])
for i = 1, #legs, 2 do
  redis.call('SET', ARGV[3] .. legs[i], ARGV[2], 'PX', ARGV[4])
end
local promised = {}
local rows = redis.call('HGETALL', KEYS[5])
for i = 1, #rows, 2 do
  local ok, row = pcall(cjson.decode, rows[i + 1])
  if ok and type(row) == 'table' and row['state'] ~= 'kept' and row['state'] ~= 'failed' then
    local mark = ARGV[3] .. 'callback:' .. rows[i]
    local holder = redis.call('GET', mark)
    if holder == ARGV[1] or (not holder and row['node'] == ARGV[1]) then
      redis.call('SET', mark, ARGV[2], 'PX', ARGV[4])
      promised[#promised + 1] = rows[i + 1]
    end
  end
end
return {owned, legs, promised}
"""


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
    """Take ``node``'s calls and open callback promises for ``heir`` in one atomic step
    (nothing when ``node`` beats again, another heir took them first, or it died with
    nothing open)."""
    keys = [_key(prefix, "node", node), _key(prefix, "nodes"), _key(prefix, "owned", node),
            _key(prefix, "legs", node), _key(prefix, "callbacks")]
    taken_prefix = _key(prefix, "taken", "")
    result = await client.eval(INHERIT_SCRIPT, len(keys), *keys, node, heir, taken_prefix,
                               TAKEN_TTL_MS)
    if not result:
        return Inheritance()
    owned_flat, legs_flat, promised = result
    callbacks = [{**row, "node": node}  # the row may still name the node before
                 for row in map(_object, promised) if row is not None]
    orphans: dict[str, OrphanCall] = {}
    for ident, row in _pairs(owned_flat):
        entry = _object(row)
        orphans[ident] = OrphanCall(node, entry if entry is not None else {"id": ident})
    for memo_key, row in _pairs(legs_flat):
        leg = _object(row)
        if leg is None:
            continue
        orphan = orphans.get(str(leg.get("call")))
        if orphan is None:  # a leg whose call row is missing: still a dialog to end
            orphan = orphans[f"leg:{memo_key}"] = OrphanCall(node, {"id": leg.get("call")})
        orphan.legs.append({**leg, "memo_key": memo_key})
    return Inheritance(list(orphans.values()), callbacks)


async def taken(client: Redis, prefix: str, memo_keys: list[str]) -> dict[str, str]:
    """Which of ``memo_keys`` another node inherited, and which node."""
    if not memo_keys:
        return {}
    heirs = await client.mget([_key(prefix, "taken", key) for key in memo_keys])
    return {key: _text(heir) for key, heir in zip(memo_keys, heirs, strict=True)
            if heir is not None}


def _pairs(flat: list[str]) -> list[tuple[str, str]]:
    """HGETALL's reply as a script returns it: field, value, field, value..."""
    return [(_text(flat[i]), _text(flat[i + 1])) for i in range(0, len(flat) - 1, 2)]


def _object(text: str) -> dict[str, Any] | None:
    """A row as the node wrote it, or None when torn or not an object."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):  # Redis's cjson accepts what Python's json refuses
        return None
    return value if isinstance(value, dict) else None


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
