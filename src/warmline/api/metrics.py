"""GET /metrics: counters and a histogram in the Prometheus text format, from live state."""

from __future__ import annotations

from collections import Counter

from warmline.calls.call import CallState
from warmline.engine import CallEngine

_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)


def metrics_text(engine: CallEngine) -> str:
    """Counters and a histogram in the Prometheus exposition format, from live state."""
    calls = list(engine.calls.values())
    handoffs = list(engine.handoffs.values())
    waits = [b.at - a.at for h in handoffs
             for a in h.events[:1] for b in h.events if b.kind == "human_first_word"]
    lines = [
        "# HELP warmline_calls Calls in the live view, by state.",
        "# TYPE warmline_calls gauge",
        *(f'warmline_calls{{state="{state}"}} {sum(c.state == state for c in calls)}'
          for state in CallState),
        "# HELP warmline_handoffs Handoffs in the live view, by status.",
        "# TYPE warmline_handoffs gauge",
        *(f'warmline_handoffs{{status="{status}"}} {count}'
          for status, count in sorted(Counter(h.status.value for h in handoffs).items())),
        "# HELP warmline_trigger_to_first_word_seconds From the request to the human's "
        "first word.",
        "# TYPE warmline_trigger_to_first_word_seconds histogram",
        *(f'warmline_trigger_to_first_word_seconds_bucket{{le="{bound}"}} '
          f"{sum(w <= bound for w in waits)}" for bound in _BUCKETS),
        f'warmline_trigger_to_first_word_seconds_bucket{{le="+Inf"}} {len(waits)}',
        f"warmline_trigger_to_first_word_seconds_sum {sum(waits):.3f}",
        f"warmline_trigger_to_first_word_seconds_count {len(waits)}",
    ]
    if engine.records is not None:
        lines += ["# HELP warmline_records_pending Events waiting for the database.",
                  "# TYPE warmline_records_pending gauge",
                  f"warmline_records_pending {engine.records.pending}"]
    return "\n".join(lines) + "\n"
