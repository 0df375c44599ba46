"""Call recordings over HTTP: start, pause, resume and stop one; fetch the file.

Controlling a call's recording sits under /calls/{id}/, so the call's own
token opens it: the bot can pause while the caller reads out a card number.
The file is another matter: a caller's voice is personal data, so
/recordings/{call id}.wav lies outside /calls/ and only the API token opens
it (api/auth.py); with no API token set it is refused (403) rather than
served to whoever can reach the port.
"""

from __future__ import annotations

import re

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from warmline.api.dependencies import EngineDep, SettingsDep
from warmline.api.errors import handoff_errors_as_http
from warmline.api.schemas import RecordingRequest, RecordingStatus
from warmline.calls.recording import RecordingConflict

router = APIRouter()
_CALL_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")  # what new_call_id makes: never a path


@router.post("/calls/{call_id}/recording")
async def control_recording(call_id: str, body: RecordingRequest,
                            engine: EngineDep) -> RecordingStatus:
    """404 for an unknown call, 409 when the action does not fit (start twice, pause
    what is not recording, anything on an ended call), 422 naming a bad field."""
    with handoff_errors_as_http():
        try:
            phase = engine.recording(call_id, body.action, body.announce)
        except RecordingConflict as error:
            raise HTTPException(409, f"action: {error}") from None
    return RecordingStatus(call_id=call_id, recording=phase)


@router.get("/calls/{call_id}/recording")
async def recording_status(call_id: str, engine: EngineDep) -> RecordingStatus:
    """Whether the call is being recorded now (announcing, recording, paused) or not."""
    if engine.known_call(call_id) is None:
        raise HTTPException(404, f"no call {call_id}")
    return RecordingStatus(call_id=call_id, recording=engine.recordings.phase(call_id))


@router.get("/recordings/{call_id}.wav", response_class=FileResponse)
async def recording_file(call_id: str, engine: EngineDep, settings: SettingsDep
                         ) -> FileResponse:
    """The call's recording (stereo WAV: the caller left, what the caller heard right)."""
    if settings.api_token is None:
        raise HTTPException(403, "recordings are served only when the API has a token "
                                 "([http] token_env or token_file)")
    if not _CALL_ID.match(call_id):
        raise HTTPException(404, f"no recording for call {call_id}")
    if engine.recordings.being_written(call_id):
        raise HTTPException(409, f"call {call_id} is still being recorded")
    path = engine.recordings.path(call_id)
    if not path.is_file():
        raise HTTPException(404, f"no recording for call {call_id}")
    return FileResponse(path, media_type="audio/wav", filename=path.name)

