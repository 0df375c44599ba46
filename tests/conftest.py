"""Refuse to test a compiled SIP core that is older than its sources."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

from warmline.sip.compiled import stale_modules

# CI runs a few hundred examples per property; HYPOTHESIS_PROFILE=deep digs further.
settings.register_profile("ci", max_examples=300, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("deep", max_examples=5000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure() -> None:
    stale = stale_modules()
    if stale:
        raise SystemExit(
            f"compiled SIP core is stale ({', '.join(stale)}): run scripts/build-core "
            "(or WARMLINE_PURE=1 scripts/build-core for the pure-Python core)")


def pytest_report_header() -> str:
    from warmline.sip.compiled import describe

    return f"warmline: {describe()}"
