"""`warmline probe`: is a destination ready to go into a transfer plan?

Before a number or a PBX extension becomes a transfer target, a person wants
to know what a transfer would meet: where DNS sends it (RFC 3263), whether it
answers OPTIONS, what it allows and supports (REFER for blind transfers,
Replaces for warm ones), whether the trunk's account gets through its
challenge, and, with ``--call``, whether it takes a call and sends audio back.

``run_probe(ProbeSettings(...))`` does all that and returns a
:class:`ProbeReport` of plain dataclasses (``checks.py``), printed by
``render.py``; its ``exit_code`` is the command's status:

- 0 reachable and OK (2xx to OPTIONS; with ``--call`` answered, audio back)
- 1 reachable but refused or failed (a final error, auth failed, no answer in
  time, a call not answered or without audio)
- 2 a usage problem (bad URI, unknown trunk, broken config, bad ``--sip``)
- 3 DNS failure (no such name, no records, no answer from DNS)

The same check as the engine's optional pre-transfer probe: not wired in
yet. ``HumanDial`` asks ``CallControl.probe`` for a status only, and the
switchboard drops the answer (``Switchboard.probe`` returns an int). To share
this check, the switchboard would hand back the ``Probe`` (it keeps the final
``response``) with the messages of its exchange, ``read_options`` and the
result types of ``checks.py`` would move below ``transfer/`` (they need only
``warmline.sip``), and a step could then refuse a blind transfer to a
destination whose Allow lacks REFER before it sends one.
"""

from warmline.probe.checks import (
    EXIT_DNS,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    AuthOutcome,
    CallCheck,
    DnsCheck,
    OptionsCheck,
    ProbeReport,
)
from warmline.probe.render import render, render_json, render_text
from warmline.probe.run import DEFAULT_TIMEOUT, ProbeSettings, ProbeUsageError, run_probe

__all__ = [
    "DEFAULT_TIMEOUT",
    "EXIT_DNS",
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "AuthOutcome",
    "CallCheck",
    "DnsCheck",
    "OptionsCheck",
    "ProbeReport",
    "ProbeSettings",
    "ProbeUsageError",
    "render",
    "render_json",
    "render_text",
    "run_probe",
]
