"""What a route is given: the engine and the API's settings, as FastAPI dependencies.

build_app puts them on ``app.state`` once, and a route asks for them by type
(``engine: EngineDep``) instead of closing over build_app's arguments; so the
routes can live in one module per resource. Neither dependency takes a
parameter of its own, so the OpenAPI schema does not show them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, FastAPI
from starlette.requests import HTTPConnection

from warmline.engine import CallEngine


@dataclass
class HttpRefusals:
    """Requests the API refused before any route ran, by reason (for /metrics)."""

    unauthorised: int = 0
    body_too_large: int = 0


@dataclass(frozen=True)
class ApiSettings:
    api_token: str | None = None  # None: the API is open to anyone who can reach it
    records_url: str | None = None  # None: no database, so no KPIs
    refusals: HttpRefusals = field(default_factory=HttpRefusals)  # counted as they happen


def provide(app: FastAPI, engine: CallEngine, settings: ApiSettings) -> None:
    """Make ``engine`` and ``settings`` what EngineDep and SettingsDep give ``app``'s routes."""
    app.state.engine = engine
    app.state.settings = settings


def _engine(connection: HTTPConnection) -> CallEngine:
    engine: CallEngine = connection.app.state.engine
    return engine


def _settings(connection: HTTPConnection) -> ApiSettings:
    settings: ApiSettings = connection.app.state.settings
    return settings


# HTTPConnection, not Request: WebSocket routes take them too.
EngineDep = Annotated[CallEngine, Depends(_engine)]
SettingsDep = Annotated[ApiSettings, Depends(_settings)]
