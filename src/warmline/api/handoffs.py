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
    live = list(engine.handoffs.values())[-limit:]
    past = list(engine.past_handoffs)[-(limit - len(live)):] if len(live) < limit else []
    recent = past + live
    return [_handoff_row(handoff) for handoff in reversed(recent)]


@router.get("/handoffs/{handoff_id}")
async def get_handoff(handoff_id: str, engine: EngineDep) -> dict[str, Any]:
    """Status, events, context and packet (the screen-pop, with the handoff's token). In a
    cluster, a handoff another node holds as that node last published it."""
    handoff = engine.handoffs.get(handoff_id)
    if handoff is not None:
        return handoff.as_dict()
    published = await _published(engine, handoff_id)
    published.pop("token", None)
    return published


@router.get("/handoffs/{handoff_id}/context")
async def screen_pop(handoff_id: str, engine: EngineDep, token: str = "") -> dict[str, Any]:
    """The full context packet for the human's desktop (the Call-Info link), from any node
    of a cluster."""
    handoff = engine.handoffs.get(handoff_id)
    if handoff is None:
        published = await _published(engine, handoff_id)
        if not same_secret(token, str(published.get("token"))):
            raise HTTPException(403, "token: missing or wrong for this handoff")
        return {"handoff_id": handoff_id, "packet": published.get("packet"),
                "context": published.get("context"), "node": published.get("node")}
    if not same_secret(token, handoff.token):
        raise HTTPException(403, "token: missing or wrong for this handoff")
    return {"handoff_id": handoff.id, "packet": handoff.packet, "context": handoff.context}


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


def _handoff_row(handoff: Handoff) -> dict[str, Any]:
    """One line of the dashboard's handoff table: who, where to, why, and how it ended."""
    packet = handoff.packet or {}
    attempt = handoff.attempt or handoff.first
    return {"id": handoff.id, "call_id": handoff.call_id, "status": handoff.status,
            "to": attempt.uri if attempt else None, "reason": handoff.reason,
            "intent": (packet.get("intent") or {}).get("name"),
            "summary": packet.get("summary"), "sip_status": handoff.sip_status,
            "wait_s": _wait(handoff), "answered_by": _answered_by(handoff)}


def _wait(handoff: Handoff) -> float | None:
    """Seconds from the request to the caller being connected, or to the end when nobody
    was; None while it runs."""
    if not handoff.events:
        return None
    start = handoff.events[0].at
    for event in handoff.events:
        if event.kind in ("connected", "completed", "failed"):
            return round(event.at - start, 1)
    return None


def _answered_by(handoff: Handoff) -> str | None:
    """Who answered (in a ring group: the member who won), if anybody did."""
    answered = [event for event in handoff.events if event.kind == "answered"]
    if not answered:
        return None
    by = answered[-1].detail.get("by") or answered[-1].detail.get("to")
    attempt = handoff.attempt or handoff.first
    return str(by) if by else (attempt.uri if attempt else None)
