"""SDP text to dicts and back, for the lines audio offer/answer reads and writes.

sdp.py used the sdp-transform library for this. It tries every regular
expression of its grammar on every line and then converts every value, which
cost ~0.15 ms an SDP each way: a tenth of what a call costs the event loop
at the cycle rates of bench/transfer_cycles.py. This module gives the same
dicts for the lines sdp.py reads (v=, c=, m=, and a=rtpmap, fmtp, rtcp,
ptime, rtcp-mux and the direction), by the same expressions and the same
conversion of values, and writes the same text for the sections sdp.py
builds; tests/unit/test_sdp_text.py holds both to sdp-transform on a corpus
of offers from real phones and malformed ones. Every other line is skipped
(a=crypto is read from the text by sdp.py itself, every instance of it).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Section = dict[str, Any]

_FIELD = re.compile(r"^([a-z])=(.*)")
_VERSION = re.compile(r"^(\d*)$")
_CONNECTION = re.compile(r"^IN IP(\d) (\S*)")
_MEDIA = re.compile(r"^(\w*) (\d*) ([\w/]*)(?: (.*))?")
_RTPMAP = re.compile(r"^rtpmap:(\d*) ([\w\-.]*)(?:\s*\/(\d*)(?:\s*\/(\S*))?)?")
_FMTP = re.compile(r"^fmtp:(\d*) ([\S| ]*)")
_RTCP = re.compile(r"^rtcp:(\d*)(?: (\S*) IP(\d) (\S*))?")
_PTIME = re.compile(r"^ptime:(\d*(?:\.\d*)*)")
_DIRECTION = re.compile(r"^(sendrecv|recvonly|sendonly|inactive)")
_RTCP_MUX = re.compile(r"^(rtcp-mux)")


def _value(text: str) -> int | float | str:
    """A number when the text is one, else the text (as sdp-transform converts values)."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _fields(found: re.Match[str], names: tuple[str, ...]) -> dict[str, Any]:
    return {name: _value(group) for name, group in zip(names, found.groups(), strict=True)
            if group is not None}


def _connection(location: Section, content: str) -> None:
    found = _CONNECTION.match(content)
    if found is not None:
        location.setdefault("connection", {}).update(_fields(found, ("version", "ip")))


def _attribute(location: Section, content: str) -> None:
    """One a= line into ``location`` (the session, or the current m= section)."""
    for prefix, reader in _ATTRIBUTES:
        if content.startswith(prefix):
            reader(location, content)
            return


def _rtpmap(location: Section, content: str) -> None:
    found = _RTPMAP.match(content)
    if found is not None:
        names = ("payload", "codec", "rate", "encoding")
        location.setdefault("rtp", []).append(_fields(found, names))


def _fmtp(location: Section, content: str) -> None:
    found = _FMTP.match(content)
    if found is not None:
        location.setdefault("fmtp", []).append(_fields(found, ("payload", "config")))


def _rtcp(location: Section, content: str) -> None:
    found = _RTCP.match(content)
    if found is not None:
        names = ("port", "netType", "ipVer", "address")
        location.setdefault("rtcp", {}).update(_fields(found, names))


def _single(name: str, pattern: re.Pattern[str]) -> Callable[[Section, str], None]:
    def read(location: Section, content: str) -> None:
        found = pattern.match(content)
        if found is not None:
            location[name] = _value(found.group(1))
    return read


# by the line's start: no two of these prefixes can both match a line, and no entry
# sdp-transform's grammar tries first matches a line starting with one of them
_ATTRIBUTES: tuple[tuple[str, Callable[[Section, str], None]], ...] = (
    ("rtpmap:", _rtpmap), ("fmtp:", _fmtp), ("rtcp:", _rtcp),
    ("ptime:", _single("ptime", _PTIME)),
    *((word, _single("direction", _DIRECTION))
      for word in ("sendrecv", "recvonly", "sendonly", "inactive")),
    ("rtcp-mux", _single("rtcpMux", _RTCP_MUX)),
)


def parse(text: str) -> Section:
    """The session as sdp-transform's ``parse`` gives it, for the lines read here."""
    session: Section = {}
    media: list[Section] = []
    location = session
    for line in text.splitlines():
        if _FIELD.match(line) is None:
            continue
        field, content = line[0], line[2:]
        if field == "a":
            _attribute(location, content)
        elif field == "m":
            location = {"rtp": [], "fmtp": []}
            media.append(location)
            found = _MEDIA.match(content)
            if found is not None:
                location.update(_fields(found, ("type", "port", "protocol", "payloads")))
        elif field == "c":
            _connection(location, content)
        elif field == "v":
            found = _VERSION.match(content)
            if found is not None:
                location["version"] = _value(found.group(1))
    session["media"] = media
    return session


def write(session: Section) -> str:
    """The text sdp-transform's ``write`` makes of a session built by sdp.py: v, o, s, c, t,
    then each m= section with its rtpmap, fmtp, crypto, ptime, direction and rtcp-mux."""
    origin = session["origin"]
    connection = session["connection"]
    lines = [
        f"v={session['version']}",
        "o={} {} {} {} IP{} {}".format(origin["username"], origin["sessionId"],
                                       _integer(origin["sessionVersion"]), origin["netType"],
                                       _integer(origin["ipVer"]), origin["address"]),
        f"s={session['name']}",
        f"c=IN IP{_integer(connection['version'])} {connection['ip']}",
        "t={} {}".format(_integer(session["timing"]["start"]),
                         _integer(session["timing"]["stop"])),
    ]
    for media in session["media"]:
        lines += _media_lines(media)
    lines.append("")
    return "\r\n".join(lines)


_WRITTEN = frozenset({"type", "port", "protocol", "payloads", "rtp", "fmtp", "crypto", "ptime",
                      "direction", "rtcpMux"})


def _media_lines(media: Section) -> list[str]:
    unknown = media.keys() - _WRITTEN
    if unknown:  # sdp-transform would write them: say so rather than leave them out
        raise ValueError(f"sdp_text.write: no line for {sorted(unknown)}")
    payloads = media.get("payloads")
    lines = [f"m={media['type']} {_integer(media['port'])} {media['protocol']} "
             f"{'' if payloads is None else payloads}"]
    for rtp in media.get("rtp") or ():
        line = f"a=rtpmap:{_integer(rtp['payload'])} {rtp['codec']}"
        if rtp.get("rate") is not None:
            line += f"/{rtp['rate']}"
            if rtp.get("encoding") is not None:
                line += f"/{rtp['encoding']}"
        lines.append(line)
    lines += [f"a=fmtp:{_integer(item['payload'])} {item['config']}"
              for item in media.get("fmtp") or ()]
    for crypto in media.get("crypto") or ():
        line = f"a=crypto:{_integer(crypto['id'])} {crypto['suite']} {crypto['config']}"
        if crypto.get("sessionConfig") is not None:
            line += f" {crypto['sessionConfig']}"
        lines.append(line)
    ptime = media.get("ptime")
    if ptime is not None:
        lines.append(f"a=ptime:{ptime:d}" if isinstance(ptime, int) else f"a=ptime:{ptime:g}")
    if media.get("direction") is not None:
        lines.append(f"a={media['direction']}")
    if media.get("rtcpMux") is not None:
        lines.append(f"a={media['rtcpMux']}")
    return lines


def _integer(value: Any) -> str:
    """As sdp-transform's %d formats it: an int, or a float cut to one."""
    return str(int(value))
