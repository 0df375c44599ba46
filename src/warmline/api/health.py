"""GET /healthz and /readyz: what a load balancer or Kubernetes asks before sending calls.

/healthz says the process answers (its event loop is not stuck). /readyz says
it can take a call now: a SIP listener is open, the records can be written,
media ports are free; 503 with the failing checks otherwise, so the balancer
sends calls elsewhere instead of to a node that would refuse them. Both are
open without a token: they say yes or no and nothing else.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from warmline.api.dependencies import EngineDep

router = APIRouter()


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Alive: the event loop answered."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(engine: EngineDep) -> JSONResponse:
    """Ready for calls: every check true (200), else 503 naming the ones that fail."""
    checks = engine.readiness()
    ready = all(checks.values())
    return JSONResponse({"ready": ready, "checks": checks}, 200 if ready else 503)
