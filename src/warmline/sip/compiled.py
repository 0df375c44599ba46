"""Whether the SIP core runs compiled (mypyc) and whether that build is stale.

Every install compiles the hot modules into C extensions beside their sources
(setup.py; scripts/build-core for a source checkout); Python prefers those. A
compiled module older than its source would silently run old code, so tests
refuse to start and `--version` says so.
"""

from __future__ import annotations

import importlib.machinery
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_SUFFIXES = tuple(importlib.machinery.EXTENSION_SUFFIXES)


def compiled_modules() -> list[Path]:
    return sorted(p for p in _HERE.iterdir() if p.name.endswith(_SUFFIXES))


def stale_modules() -> list[str]:
    """Compiled modules whose .py source changed after they were built. Only in a source
    checkout: an installed wheel's files all carry the install's time, in no set order."""
    if not (_HERE.parents[2] / "pyproject.toml").exists():
        return []
    stale = []
    for extension in compiled_modules():
        source = _HERE / (extension.name.split(".", 1)[0] + ".py")
        if source.exists() and source.stat().st_mtime > extension.stat().st_mtime:
            stale.append(source.name)
    return stale


def describe() -> str:
    count = len(compiled_modules())
    if not count:
        return "pure-Python SIP core"
    stale = stale_modules()
    note = f" (STALE: {', '.join(stale)}; run scripts/build-core)" if stale else ""
    return f"SIP core compiled with mypyc ({count} modules){note}"
