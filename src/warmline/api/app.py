"""build_app: the FastAPI application over one CallEngine, its routes and its auth."""

from __future__ import annotations

from fastapi import FastAPI

from warmline.api import (
    admin,
    calls,
    dashboard,
    handoffs,
    health,
    recordings,
    reports,
    stream,
    traces,
    trunks,
    twilio,
)
from warmline.api.auth import install_auth
from warmline.api.cluster import install_forwarding, shared_token
from warmline.api.dependencies import ApiSettings, provide
from warmline.api.limits import install_limits
from warmline.engine import CallEngine


def build_app(engine: CallEngine, api_token: str | None = None,
              records_url: str | None = None, body_limit: int = 1_048_576) -> FastAPI:
    """The API over ``engine``. With ``api_token`` every request needs
    ``Authorization: Bearer <token>``, except that a call's or a handoff's own token
    opens that call or handoff alone (api/auth.py). Without ``records_url`` (the
    records database) the KPI routes answer 404. Bodies over ``body_limit`` bytes
    get 413 (api/limits.py)."""
    app = FastAPI(title="warmline", summary="Hand live calls from an AI agent to a human.")
    settings = ApiSettings(api_token, records_url)
    provide(app, engine, settings)
    shared = getattr(engine, "shared", None)  # (test doubles of the engine have none)
    if api_token is not None:
        install_auth(app, api_token, engine.shown_handoff, engine.known_call, settings.refusals,
                     shared_token(shared) if shared is not None else None)
    if shared is not None:  # added after auth, so it runs first: the owner of a call checks
        install_forwarding(app, engine, shared, api_token)  # the token (a call's own token too)
    # added last, so it runs first: a huge body is refused before auth reads anything
    install_limits(app, body_limit, settings.refusals)
    for routes in (calls.router, stream.router, handoffs.router, reports.router,
                   trunks.router, dashboard.router, health.router, traces.router,
                   recordings.router, twilio.router, admin.router):
        app.include_router(routes)
    return app
