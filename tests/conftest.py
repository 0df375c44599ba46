"""Refuse to test a compiled SIP core that is older than its sources."""

from __future__ import annotations

from warmline.sip.compiled import stale_modules


def pytest_configure() -> None:
    stale = stale_modules()
    if stale:
        raise SystemExit(
            f"compiled SIP core is stale ({', '.join(stale)}): run scripts/build-core "
            "(or WARMLINE_PURE=1 scripts/build-core for the pure-Python core)")


def pytest_report_header() -> str:
    from warmline.sip.compiled import describe

    return f"warmline: {describe()}"
