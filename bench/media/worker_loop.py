"""What the bench's relay workers share: run on uvloop when it is there (as `warmline serve`
does), announce readiness as one JSON line, then relay until the parent closes stdin."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine
from typing import Any

from warmline.media.relay import EmbeddedRelay
from warmline.server import tune_garbage_collector


async def serve_until_stdin_closes(relay: EmbeddedRelay, ready: dict[str, Any]) -> None:
    tune_garbage_collector()
    print(json.dumps(ready), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await relay.close()


def run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main)
