"""Routes for the figures: the KPIs and daily counts from the records, live metrics.

The KPIs read the database, so they run in a worker thread (the event loop
carries the calls) and are 404 when warmline keeps no records. /metrics reads
live state only, for Prometheus to scrape.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Response

from warmline.api.dependencies import ApiSettings, EngineDep, SettingsDep
from warmline.api.metrics import metrics_text
from warmline.records.report import daily_report, kpi_report

PROMETHEUS_TEXT = "text/plain; version=0.0.4"

router = APIRouter()


@router.get("/kpis")
async def kpis(settings: SettingsDep, days: float = 31.0) -> dict[str, Any]:
    """The five KPIs over the last ``days``, overall and per intent (zeros when empty)."""
    records_url = _records_url(settings)
    if not 0 < days <= 3660:
        raise HTTPException(422, "days: must be in (0, 3660]")
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, kpi_report, records_url, days)


@router.get("/kpis/daily")
async def kpis_daily(settings: SettingsDep, days: int = 14,
                     intent: str | None = None) -> list[dict[str, Any]]:
    """Calls and transfers per day (UTC) for the dashboard's chart."""
    records_url = _records_url(settings)
    if not 0 < days <= 366:
        raise HTTPException(422, "days: must be in (0, 366]")
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(None, daily_report, records_url, days, intent)


@router.get("/metrics")
async def metrics(engine: EngineDep, settings: SettingsDep) -> Response:
    """Prometheus text format: counters and the trigger-to-first-word histogram."""
    refused = {"http_unauthorised": settings.refusals.unauthorised,
               "http_body_too_large": settings.refusals.body_too_large}
    return Response(metrics_text(engine, refused), media_type=PROMETHEUS_TEXT)


def _records_url(settings: ApiSettings) -> str:
    """The database, or 404. Called in the route, not as a dependency, so a malformed
    query parameter still gets its 422 first."""
    if settings.records_url is None:
        raise HTTPException(404, "records are not kept (no database configured)")
    return settings.records_url
