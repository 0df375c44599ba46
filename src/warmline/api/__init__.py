"""The control API over HTTP: list calls, ask for a transfer, follow the handoff.

`warmline serve --http HOST:PORT` serves it in the engine's own event loop,
so a request acts on the calls directly, with no locking. FastAPI publishes
the OpenAPI schema at /openapi.json (and the docs at /docs). Bad requests
change nothing and get a 4xx naming the field: 404 for an unknown call or
handoff, 409 when the call cannot take a transfer now (one handoff at a
time; the second of two concurrent requests loses), 413 for a context over
the size limit, 422 for an invalid URI, mode or timeout.

One module per job: ``app`` puts the application together; ``calls``,
``stream``, ``handoffs``, ``reports`` and ``dashboard`` hold the routes;
``schemas`` the request and response bodies; ``auth`` who may call;
``errors`` the HTTP status of each handoff problem; ``resolve`` the DNS check
of destinations; ``metrics`` the Prometheus text; ``http_server`` uvicorn.
"""

from __future__ import annotations

from warmline.api.app import build_app
from warmline.api.errors import http_status
from warmline.api.http_server import start_http, stop_http

__all__ = ["build_app", "http_status", "start_http", "stop_http"]
