"""A minimal SDP offer/answer for G.711 audio (RFC 3264), enough to answer a call.

The full negotiation (G.722, Opus, hold, renegotiation) belongs to the media
plane; this only picks PCMU or PCMA (plus telephone-event) from an offer and
rejects every other stream with port 0, as RFC 3264 §6 requires.
"""

from __future__ import annotations

from dataclasses import dataclass

from warmline.sip.uri import is_digits

_STATIC = {0: "PCMU", 8: "PCMA"}
_SUPPORTED = frozenset({"PCMU", "PCMA"})


@dataclass(frozen=True, slots=True)
class MediaLine:
    kind: str
    port: int
    proto: str
    formats: list[str]
    rtpmaps: dict[str, str]
    fmtps: dict[str, str]


def _media_lines(offer: str) -> list[MediaLine]:
    lines: list[MediaLine] = []
    for raw in offer.replace("\r\n", "\n").split("\n"):
        key, _, value = raw.strip().partition("=")
        if key == "m":
            parts = value.split()
            if len(parts) < 4 or not is_digits(parts[1].split("/")[0]):
                raise ValueError(f"malformed m= line {raw!r}")
            lines.append(MediaLine(parts[0], int(parts[1].split("/")[0]), parts[2], parts[3:],
                                   {}, {}))
        elif key == "a" and lines and value.startswith(("rtpmap:", "fmtp:")):
            name, _, rest = value.partition(":")
            pt, _, spec = rest.partition(" ")
            target = lines[-1].rtpmaps if name == "rtpmap" else lines[-1].fmtps
            target[pt] = spec
    return lines


def _codec(line: MediaLine, pt: str) -> str | None:
    if pt in line.rtpmaps:
        return line.rtpmaps[pt].split("/")[0].upper()
    return _STATIC.get(int(pt)) if is_digits(pt) else None


def answer_audio(offer: bytes, host: str, port: int, version: int) -> bytes | None:
    """An answer to ``offer`` with one G.711 audio stream, or None when nothing fits (488)."""
    try:
        media = _media_lines(offer.decode("utf-8", "replace"))
    except ValueError:
        return None
    body = _header(host, version)
    chosen = False
    for line in media:
        picked = None if chosen else _pick(line)
        if picked is None:
            body.append(f"m={line.kind} 0 {line.proto} {line.formats[0]}")
            continue
        chosen = True
        body += _audio_section(line, picked, port)
    return ("\r\n".join(body) + "\r\n").encode() if chosen else None


def offer_audio(host: str, port: int, version: int) -> bytes:
    """An offer of PCMU, PCMA and telephone-event, for INVITEs that came without SDP."""
    body = [
        *_header(host, version),
        f"m=audio {port} RTP/AVP 0 8 101",
        "a=rtpmap:0 PCMU/8000",
        "a=rtpmap:8 PCMA/8000",
        "a=rtpmap:101 telephone-event/8000",
        "a=fmtp:101 0-16",
        "a=ptime:20",
        "a=sendrecv",
    ]
    return ("\r\n".join(body) + "\r\n").encode()


def _header(host: str, version: int) -> list[str]:
    family = "IP6" if ":" in host else "IP4"
    return [
        "v=0", f"o=warmline {version} {version} IN {family} {host}", "s=warmline",
        f"c=IN {family} {host}", "t=0 0",
    ]


def _pick(line: MediaLine) -> tuple[str, str, str | None] | None:
    if line.kind != "audio" or line.port == 0 or "RTP/AVP" not in line.proto.upper():
        return None
    names = {pt: _codec(line, pt) for pt in line.formats}
    event = next((pt for pt, name in names.items() if name == "TELEPHONE-EVENT"), None)
    for pt, name in names.items():  # the offerer's order of preference (RFC 3264 §6.1)
        if name in _SUPPORTED:
            return pt, name, event
    return None


def _audio_section(line: MediaLine, picked: tuple[str, str, str | None], port: int) -> list[str]:
    pt, name, event = picked
    formats = [pt] + ([event] if event else [])
    section = [f"m=audio {port} {line.proto} {' '.join(formats)}", f"a=rtpmap:{pt} {name}/8000"]
    if event:
        section.append(f"a=rtpmap:{event} telephone-event/8000")
        section.append(f"a=fmtp:{event} {line.fmtps.get(event, '0-16')}")
    section += ["a=ptime:20", "a=sendrecv"]
    return section
