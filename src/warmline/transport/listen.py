"""Listener specifications as given on the command line: ``udp:127.0.0.1:5070``.

Behind NAT (or on 0.0.0.0) the address a listener binds is not the one peers
must use: ``udp:10.0.0.5:5060;advertise=203.0.113.7:5060`` binds the first and
puts the second in Via and Contact (the port defaults to the bound one).

``;access=trusted|challenge|open`` says what the listener does with a new
request from outside the trusted networks (sip/access.py); without it the
``[sip] access`` default applies. An internal listener for the PBX and a
public one that challenges can then run side by side.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from warmline.sip.access import AccessMode
from warmline.sip.uri import is_digits, is_ip_address

TRANSPORTS = ("udp", "tcp", "tls")
_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)*"
                       r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


class ListenSpecError(ValueError):
    """A --sip value that cannot be used; the message names the value and the problem."""


@dataclass(frozen=True, slots=True)
class ListenSpec:
    transport: str
    host: str
    port: int
    advertise_host: str | None = None  # what peers are told instead (NAT, 0.0.0.0)
    advertise_port: int | None = None
    access: AccessMode | None = None  # None: the [sip] access default

    @property
    def public(self) -> tuple[str, int]:
        """The address for Via and Contact: the advertised one, else the bound one."""
        return self.advertise_host or self.host, self.advertise_port or self.port

    def bound_to(self, port: int) -> ListenSpec:
        """This spec with the port the socket really got (port 0 picks one)."""
        return replace(self, port=port)

    def __str__(self) -> str:
        text = f"{self.transport}:{_bracketed(self.host)}:{self.port}"
        if self.advertise_host is not None:
            text += f";advertise={_bracketed(self.advertise_host)}"
            if self.advertise_port is not None:
                text += f":{self.advertise_port}"
        if self.access is not None:
            text += f";access={self.access.value}"
        return text


def _bracketed(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def parse_listen(text: str) -> ListenSpec:
    """Parse ``transport:host:port[;advertise=host[:port]][;access=MODE]`` (IPv6 hosts in
    brackets). Port 0 picks a free one.
    """
    address, *options = text.split(";")
    spec = _parse_address(text, address)
    for option in options:
        name, _, value = option.partition("=")
        name, value = name.strip().lower(), value.strip()
        if name == "advertise" and value:
            host, port = _advertised(text, value)
            spec = replace(spec, advertise_host=host, advertise_port=port)
        elif name == "access" and value:
            spec = replace(spec, access=_access(text, value))
        else:
            raise ListenSpecError(f"--sip {text!r}: options are ;advertise=HOST[:PORT] and "
                                  ";access=trusted|challenge|open")
    return spec


def _access(text: str, value: str) -> AccessMode:
    try:
        return AccessMode(value.lower())
    except ValueError:
        raise ListenSpecError(f"--sip {text!r}: access must be trusted, challenge or "
                              "open") from None


def _advertised(text: str, value: str) -> tuple[str, int | None]:
    """HOST[:PORT] (an IP, IPv6 in brackets, or a DNS name)."""
    if value.startswith("["):
        host, _, port_text = value[1:].partition("]")
        port_text = port_text.removeprefix(":")
    elif value.count(":") == 1:
        host, _, port_text = value.partition(":")
    else:
        host, port_text = value, ""
    if not host or not (is_ip_address(host) or _HOSTNAME.match(host)):
        raise ListenSpecError(f"--sip {text!r}: advertise needs an IP address or a host name")
    if port_text and (not is_digits(port_text) or not 0 < int(port_text) <= 65535):
        raise ListenSpecError(f"--sip {text!r}: advertised port must be 1-65535")
    return host, int(port_text) if port_text else None


def _parse_address(text: str, address: str) -> ListenSpec:
    transport, sep, rest = address.partition(":")
    transport = transport.lower()
    if not sep or transport not in TRANSPORTS:
        raise ListenSpecError(f"--sip {text!r}: expected udp:HOST:PORT, tcp:HOST:PORT or tls:...")
    if rest.startswith("["):
        host, _, port_text = rest[1:].partition("]")
        port_text = port_text.removeprefix(":")
    else:
        host, _, port_text = rest.rpartition(":")
    if not is_ip_address(host):
        raise ListenSpecError(f"--sip {text!r}: host must be an IP address")
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
