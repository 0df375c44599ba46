"""Listener specifications as given on the command line: ``udp:127.0.0.1:5070``."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from warmline.sip.uri import is_digits

TRANSPORTS = ("udp", "tcp", "tls")


class ListenSpecError(ValueError):
    """A --sip value that cannot be used; the message names the value and the problem."""


@dataclass(frozen=True, slots=True)
class ListenSpec:
    transport: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport}:{host}:{self.port}"


def parse_listen(text: str) -> ListenSpec:
    """Parse ``transport:host:port`` (IPv6 hosts in brackets); port 0 picks a free one."""
    transport, sep, rest = text.partition(":")
    transport = transport.lower()
    if not sep or transport not in TRANSPORTS:
        raise ListenSpecError(f"--sip {text!r}: expected udp:HOST:PORT, tcp:HOST:PORT or tls:...")
    if rest.startswith("["):
        host, _, port_text = rest[1:].partition("]")
        port_text = port_text.removeprefix(":")
    else:
        host, _, port_text = rest.rpartition(":")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ListenSpecError(f"--sip {text!r}: host must be an IP address") from None
    if not is_digits(port_text) or int(port_text) > 65535:
        raise ListenSpecError(f"--sip {text!r}: port must be 0-65535")
    return ListenSpec(transport, host, int(port_text))


def parse_host_port(text: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets) for an HTTP listener; ValueError saying what is wrong."""
    host, _, port = text.rpartition(":")
    host = host.strip("[]")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: expected HOST:PORT, e.g. 127.0.0.1:8080")
    return host, int(port)
