"""Logging set-up: readable text by default, JSON lines (`--log-format json`) for machines.

Log calls about a call or a handoff pass ``extra={"call_id": ..., "handoff_id": ...}``,
so a JSON line can be filtered by id without parsing the message.

Every handler set up here redacts warmline's records (:class:`RedactingFilter`):
the words come in redacted already (brain/service.py), so this is the net
for a future log line that formats something raw. The redaction itself is
brain/redact.py's, handed in by the caller of :func:`configure` (the CLI):
this module sits in the lowest layer and imports nothing of warmline's. It
costs a few microseconds a record (bench/log_redaction.py).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable

IDS = ("call_id", "handoff_id")
Redactor = Callable[[str], str]  # text in, text with personal data replaced out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                + f".{int(record.msecs):03d}Z", "level": record.levelname.lower(),
                "logger": record.name, "msg": record.getMessage()}
        for key in IDS:
            value = getattr(record, key, None)
            if value is not None:
                line[key] = value
        if record.exc_info:
            line["exc"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(line)


class RedactingFilter(logging.Filter):
    """Redacts the message (its args formatted in) and traceback of ``prefix`` records.

    A handler's filter, not a logger's: a logger's filters see only records
    logged on that very logger, never those of its children. The record is
    changed in place, so handlers after this one get it redacted too.
    """

    def __init__(self, redact: Redactor, prefix: str = "warmline") -> None:
        super().__init__()
        self.redact = redact
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self.prefix):
            return True
        try:
            message = record.getMessage()
        except Exception:  # args that do not fit: the handler reports it as usual
            return True
        clean = self.redact(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = self.redact(_TRACEBACKS.formatException(record.exc_info))
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        return True


_TRACEBACKS = logging.Formatter()


def configure(level: str, fmt: str = "text", *, redact: Redactor) -> None:
    """One handler on stderr for every logger, redacting warmline's records with
    ``redact`` (required, so no set-up can forget it)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactingFilter(redact))
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
