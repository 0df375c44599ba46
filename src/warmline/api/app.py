"""build_app: the FastAPI application over one CallEngine, its routes and its auth."""

from __future__ import annotations

from fastapi import FastAPI

from warmline.api import calls, dashboard, handoffs, reports, stream, trunks
from warmline.api.auth import install_auth
from warmline.api.dependencies import ApiSettings, provide
from warmline.engine import CallEngine


def build_app(engine: CallEngine, api_token: str | None = None,
              records_url: str | None = None) -> FastAPI:
    """The API over ``engine``. With ``api_token`` every request needs
    ``Authorization: Bearer <token>``, except that a handoff's own token (in its
    Call-Info link) opens that handoff alone (api/auth.py). Without ``records_url``
    (the records database) the KPI routes answer 404."""
    app = FastAPI(title="warmline", summary="Hand live calls from an AI agent to a human.")
    provide(app, engine, ApiSettings(api_token, records_url))
    if api_token is not None:
        install_auth(app, api_token, engine.handoffs)
    for routes in (calls.router, stream.router, handoffs.router, reports.router,
                   trunks.router, dashboard.router):
        app.include_router(routes)
    return app
