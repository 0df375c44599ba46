"""HandoffError as HTTP: each kind of problem has one status, the same on every route.

The engine says what went wrong with a :class:`Problem` (it knows nothing of
HTTP); this is the one place that turns it into a status code, so a request
refused in-process and one refused over HTTP are refused for the same reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from fastapi import HTTPException

from warmline.transfer.handoff import HandoffError, Problem

HTTP_STATUS = {Problem.INVALID: 422, Problem.TOO_LARGE: 413, Problem.UNKNOWN_CALL: 404,
               Problem.CONFLICT: 409, Problem.FORBIDDEN: 403}


def http_status(error: HandoffError) -> int:
    """The HTTP status that says what kind of problem ``error`` is."""
    return HTTP_STATUS[error.problem]


@contextlib.contextmanager
def handoff_errors_as_http() -> Iterator[None]:
    """Raise a HandoffError from inside as its HTTP status, keeping the message (it names
    the field at fault, which is what the client needs to fix the request)."""
    try:
        yield
    except HandoffError as error:
        raise HTTPException(http_status(error), str(error)) from None
