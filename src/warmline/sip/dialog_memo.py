"""What it takes to end a dialog after a crash: a few strings, kept outside the process.

When warmline dies (``kill -9``, an OOM kill, a power cut of the VM) its calls'
far ends still think the calls are up: the caller hears silence, the human's
phone shows a call, the carrier bills. Session timers (RFC 4028) end them
eventually; a memo of each confirmed dialog lets the next start end them at
once, with a BYE that any RFC 3261 peer accepts: the dialog's Call-ID, tags,
parties, remote target and route set, and a CSeq above anything sent before.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields

from warmline.sip.dialog import Dialog, DialogState
from warmline.sip.errors import SipParseError
from warmline.sip.events import Target
from warmline.sip.headers import parse_name_addr
from warmline.sip.uri import SipUri, parse_uri

# A restarted engine cannot know how many in-dialog requests (refreshes, re-INVITEs)
# followed the memo; CSeq must only grow (RFC 3261 §12.2.1.1), and a jump is legal.
CSEQ_JUMP = 100_000


@dataclass(frozen=True)
class DialogMemo:
    """One confirmed dialog, as text: enough to send it a BYE from a new process."""

    call_id: str
    local_tag: str
    remote_tag: str
    local_address: str
    remote_address: str
    remote_target: str
    local_contact: str
    local_seq: int
    route_set: tuple[str, ...]
    transport: str  # where the BYE goes: the transport, host and port of the next hop
    host: str
    port: int

    @property
    def key(self) -> str:
        return f"{self.call_id};{self.local_tag}"

    @classmethod
    def of(cls, dialog: Dialog, target: Target) -> DialogMemo:
        return cls(dialog.call_id, dialog.local_tag, dialog.remote_tag,
                   str(dialog.local_address), str(dialog.remote_address),
                   str(dialog.remote_target), str(dialog.local_contact), dialog.local_seq,
                   tuple(str(route) for route in dialog.route_set),
                   target.transport, target.host, target.port)

    def to_json(self) -> str:
        """One line of JSON (every field is a plain value: asdict's deep copy is not
        needed, and cost a tenth of the journal's time on every dialog)."""
        return json.dumps({name: getattr(self, name) for name in _FIELDS}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> DialogMemo:
        """A memo read back; SipParseError when the text is not one (a torn write)."""
        try:
            values = json.loads(text)
            values["route_set"] = tuple(values["route_set"])
            return cls(**values)
        except (ValueError, TypeError, KeyError) as error:
            raise SipParseError(f"not a dialog memo: {error}") from None

    def dialog(self) -> Dialog:
        """The dialog again, its CSeq moved past anything sent before the crash."""
        target = parse_uri(self.remote_target)
        if not isinstance(target, SipUri):
            raise SipParseError(f"dialog memo: remote target {self.remote_target!r}")
        return Dialog(self.call_id, self.local_tag, self.remote_tag,
                      parse_name_addr(self.local_address), parse_name_addr(self.remote_address),
                      target, parse_name_addr(self.local_contact),
                      self.local_seq + CSEQ_JUMP,
                      route_set=[parse_name_addr(route) for route in self.route_set],
                      state=DialogState.CONFIRMED)

    @property
    def target(self) -> Target:
        return Target(self.transport, self.host, self.port)


_FIELDS = tuple(field.name for field in fields(DialogMemo))
