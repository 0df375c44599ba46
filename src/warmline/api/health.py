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
SHARED = ("redis",)  # checks that degrade the node without making it unfit for calls


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Alive: the event loop answered."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(engine: EngineDep) -> JSONResponse:
    """Ready for calls: every check true (200), else 503 naming the ones that fail.

    ``redis`` (in a cluster) is reported, not required: a node whose Redis is down
    still answers, transfers and ends its own calls, so the balancer should keep
    sending it calls; failing readiness would take every node out at once in a Redis
    outage. Such a node answers 200 with ``degraded: ["redis"]``."""
    checks = engine.readiness()
    ready = all(ok for name, ok in checks.items() if name not in SHARED)
    degraded = [name for name in SHARED if checks.get(name) is False]
    return JSONResponse({"ready": ready, "checks": checks, "degraded": degraded},
                        200 if ready else 503)
