"""uvicorn embedded in warmline's own event loop, so a request acts on the calls directly.

The engine is not thread-safe and needs no locks as long as everything runs in
one loop; uvicorn here is just another task in it. warmline keeps its own
signal handlers (they hang up the calls before stopping), so uvicorn installs
none.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator

import uvicorn
from fastapi import FastAPI


class EmbeddedHttpServer(uvicorn.Server):
    """uvicorn inside warmline's loop; warmline's own signal handlers stop both."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def start_http(app: FastAPI, host: str, port: int, *, ws_max_size: int = 65_536,
                     concurrency: int | None = None,
                     ) -> tuple[EmbeddedHttpServer, asyncio.Task[None]]:
    """Serve ``app`` on a socket bound here, so a taken port is an OSError, not an exit.

    A WebSocket message over ``ws_max_size`` bytes closes that socket (1009); a
    connection idle between requests is closed after 5 s, and one sending its
    headers too slowly by h11's own limits, so idle sockets do not pile up. Past
    ``concurrency`` connections at once (media streams included) uvicorn answers 503.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise OSError(f"--http {host}:{port}: {error.strerror}") from None
    server = EmbeddedHttpServer(uvicorn.Config(
        app, log_level="warning", lifespan="off", access_log=False, ws_max_size=ws_max_size,
        timeout_keep_alive=5, limit_concurrency=concurrency))
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    while not server.started and not task.done():
        await asyncio.sleep(0.01)
    return server, task


async def stop_http(server: EmbeddedHttpServer, task: asyncio.Task[None]) -> None:
    """Ask uvicorn to finish the requests in flight and wait until it has stopped."""
    server.should_exit = True
    await task
