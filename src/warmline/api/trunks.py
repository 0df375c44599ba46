"""GET /trunks: each trunk and, when it registers, how that is going."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from warmline.api.dependencies import EngineDep

router = APIRouter()


@router.get("/trunks")
async def list_trunks(engine: EngineDep) -> list[dict[str, Any]]:
    """Trunks in config order: uri, outbound proxy, and for registering ones the state
    (registering, registered, failed, unregistered), the last status and reason, the
    granted expiry and when the next refresh or retry is due."""
    return engine.registrations.view()
