"""What the sans-IO core hands back: datagrams to send and events for the layer above."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from warmline.sip.message import Request, Response


class Target(NamedTuple):
    """Where to send: a transport name and an address, or an existing connection.

    ``connection`` identifies a stream (TCP/TLS) connection the shell already
    holds; responses to stream requests go back over it (RFC 3261 §18.2.2).
    """

    transport: str  # "udp", "tcp" or "tls"
    host: str
    port: int
    connection: int | None = None

    @property
    def reliable(self) -> bool:
        return self.transport != "udp"


@dataclass(frozen=True, slots=True)
class Transmit:
    """Bytes the shell must put on the wire toward ``target``."""

    target: Target
    data: bytes


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request for the transaction user (``transaction`` is None for a 2xx ACK)."""

    request: Request
    source: Target
    transaction: object | None


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    response: Response
    transaction: object


@dataclass(frozen=True, slots=True)
class TransactionTimeout:
    """Timer B/F (no response), H (no ACK), the CANCEL guard, or a transport failure.

    A transport failure counts as 503 for the TU, a timeout as 408 (RFC 3261 §8.1.3.1).
    """

    transaction: object
    transport_error: bool = False


@dataclass(frozen=True, slots=True)
class TransactionTerminated:
    transaction: object


TransactionEvent = RequestReceived | ResponseReceived | TransactionTimeout | TransactionTerminated
