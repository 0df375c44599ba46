"""Errors raised by the sans-IO SIP core.

A parse error carries the SIP status a server should answer with and a
human-readable reason, so that the UA core can turn any bad input into a
precise response (400 with a Reason phrase, 505, 513 ...) instead of a crash.
"""

from __future__ import annotations


class SipError(Exception):
    """Base class of every error the SIP core raises on purpose."""


class SipParseError(SipError):
    """A message, header or URI could not be parsed.

    ``status`` is the response a UAS should send when the message was a
    request whose transaction can still be identified (400 by default).
    """

    def __init__(self, reason: str, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


class MessageTooLarge(SipParseError):
    """The message exceeds the configured maximum size (answered with 513)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"Message Too Large ({size} > {limit} bytes)", status=513)
        self.size = size
        self.limit = limit
