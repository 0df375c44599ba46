"""Routes on handoffs: the recent ones, one in full, its screen-pop, the callbacks promised."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException

from warmline.api.auth import same_secret
from warmline.api.cluster import every_callback, shared_handoff
from warmline.api.dependencies import EngineDep
from warmline.engine import CallEngine
from warmline.transfer.handoff import Handoff

router = APIRouter()


@router.get("/handoffs")
async def recent_handoffs(engine: EngineDep, limit: int = 50) -> list[dict[str, Any]]:
    """The latest handoffs, newest first, with outcome and summary: those of the calls in
    memory, then the last few hundred of calls already forgotten."""
    if not 0 < limit <= 1000:
        raise HTTPException(422, "limit: must be in (0, 1000]")
    return [handoff.as_row() for handoff in engine.recent_handoffs(limit)]


@router.get("/handoffs/{handoff_id}")
async def get_handoff(handoff_id: str, engine: EngineDep) -> dict[str, Any]:
    """Status, events, context and packet (the screen-pop, with the handoff's token). In a
    cluster, a handoff another node holds as that node last published it."""
    handoff = engine.shown_handoff(handoff_id)
    if handoff is not None:
        return handoff.as_dict()
    published = await _published(engine, handoff_id)
    published.pop("token", None)
    return published


@router.get("/handoffs/{handoff_id}/context")
async def screen_pop(handoff_id: str, engine: EngineDep, token: str = "") -> dict[str, Any]:
    """The full context packet for the human's desktop (the Call-Info link), from any node
    of a cluster."""
    handoff = engine.shown_handoff(handoff_id)
    if handoff is None:
        published = await _published(engine, handoff_id)
        if not same_secret(token, str(published.get("token"))):
            raise HTTPException(403, "token: missing or wrong for this handoff")
        return {"handoff_id": handoff_id, "packet": published.get("packet"),
                "context": published.get("context"), "node": published.get("node")}
    if not same_secret(token, handoff.token):
        raise HTTPException(403, "token: missing or wrong for this handoff")
    if isinstance(handoff, Handoff):
        return {"handoff_id": handoff.id, "packet": handoff.packet, "context": handoff.context}
    shown = handoff.as_dict()
    return {"handoff_id": handoff.id, "packet": shown["packet"], "context": shown["context"]}


@router.get("/callbacks")
async def list_callbacks(engine: EngineDep) -> list[dict[str, Any]]:
    """Callbacks promised to callers nobody could take (newest last), each with where its
    dialling stands: state (pending, dialling, connecting, kept, failed), attempts, outcome.
    In a cluster every node's, each with the ``node`` that holds and dials it."""
    if engine.shared is None:
        return engine.callback_book.as_dicts()
    return await every_callback(engine)


async def _published(engine: CallEngine, handoff_id: str) -> dict[str, Any]:
    """A handoff another node published in the cluster's registry; 404 when none did."""
    published = await shared_handoff(engine.shared, handoff_id)
    if published is None:
        raise HTTPException(404, f"no handoff {handoff_id}")
    return published
