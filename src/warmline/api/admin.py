"""/admin/drain: take this node out of service without dropping a call.

``POST /admin/drain`` stops new calls (503 with Retry-After to new INVITEs and
OPTIONS probes, so Kamailio fails over and marks the node inactive; /readyz
503) while the live calls and their transfers finish; ``GET`` reads where the
drain is (accepting, draining, drained; live dialogs left); ``DELETE`` takes
the node back into service. Only the API token opens these routes: a call's
or a handoff's own token never does (api/auth.py lets those reach /calls/{id}
and /handoffs/{id} alone). SIGUSR1 does the same as the POST (server.py).
"""

from __future__ import annotations

from fastapi import APIRouter

from warmline.api.dependencies import EngineDep

router = APIRouter(prefix="/admin", tags=["admin"])


@router.get("/drain")
async def drain_state(engine: EngineDep) -> dict[str, object]:
    """The drain state: accepting, draining (live dialogs left) or drained."""
    return engine.drain.as_dict()


@router.post("/drain", status_code=202)
async def start_drain(engine: EngineDep) -> dict[str, object]:
    """Stop taking new calls; live calls finish (202; again while draining: no change)."""
    engine.drain.start("POST /admin/drain")
    return engine.drain.as_dict()


@router.delete("/drain")
async def stop_drain(engine: EngineDep) -> dict[str, object]:
    """Take new calls again (the node had not exited yet)."""
    engine.drain.resume()
    return engine.drain.as_dict()
