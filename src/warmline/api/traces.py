"""The SIP trace of a call or a handoff, for the dashboard's ladder.

Under /traces, not /calls/{id}/, on purpose: a bot holds its call's token,
and the trace carries the other legs' addresses and signalling, so only the
API token opens it. A live call's comes from memory; an ended call's is
read from ``traces.sqlite`` in a worker thread (a query, a file opened).
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException

from warmline.api.dependencies import EngineDep
from warmline.records.trace_store import find_trace

router = APIRouter()


@router.get("/traces/{call_or_handoff_id}")
async def sip_trace(call_or_handoff_id: str, engine: EngineDep) -> dict[str, Any]:
    """Every SIP message of the call (so far, for a live one), oldest first, with the
    seconds from the first and a one-line summary of each for the ladder."""
    found = engine.live_sip_messages(call_or_handoff_id)
    if found is None:
        loop = asyncio.get_running_loop()
        try:
            found = await loop.run_in_executor(None, find_trace, engine.records_dir,
                                               call_or_handoff_id)
        except LookupError as error:
            raise HTTPException(404, str(error)) from None
    call_id, messages = found
    start = messages[0].at if messages else 0.0
    return {"call_id": call_id, "messages": [
        {"offset_s": round(m.at - start, 3), "direction": m.direction,
         "peer": f"{m.host}:{m.port}", "transport": m.transport, "summary": m.summary,
         "text": m.text} for m in messages]}
