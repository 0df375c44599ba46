"""GET /metrics: counters and a histogram in the Prometheus text format, from live state."""

from __future__ import annotations

from collections import Counter

from warmline.calls.call import CallState
from warmline.engine import CallEngine

_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0)


def metrics_text(engine: CallEngine, http_refusals: dict[str, int] | None = None) -> str:
    """Counters and a histogram in the Prometheus exposition format, from live state."""
    calls = list(engine.calls.values())
    handoffs = list(engine.shown_handoffs.values())
    waits = [wait for handoff in handoffs for wait in handoff.first_word_waits]
    lines = [
        "# HELP warmline_calls Calls in the live view, by state.",
        "# TYPE warmline_calls gauge",
        *(f'warmline_calls{{state="{state}"}} {sum(c.state == state for c in calls)}'
          for state in CallState if state is not CallState.ENDED),
        f'warmline_calls{{state="ended"}} '
        f"{sum(c.ended for c in calls) + len(engine.ended_calls)}",
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
    lines += ["# HELP warmline_refusals_total Requests, calls and connections refused to "
              "protect the engine, by reason.",
              "# TYPE warmline_refusals_total counter",
              *(f'warmline_refusals_total{{reason="{reason}"}} {count}'
                for reason, count in {**engine.refusals(), **(http_refusals or {})}.items())]
    admission = engine.switchboard.shell.ua.admission
    lines += ["# HELP warmline_sip_queue_delay_seconds How long the latest probe waited unread "
              "in a UDP listener's queue (0: not watched).",
              "# TYPE warmline_sip_queue_delay_seconds gauge",
              f"warmline_sip_queue_delay_seconds {admission.last_delay:.4f}",
              "# HELP warmline_new_calls_cap New calls a second taken while the node is "
              "behind on its SIP input; 0: no cap.",
              "# TYPE warmline_new_calls_cap gauge",
              f"warmline_new_calls_cap {admission.cap or 0:.1f}"]
    traces = engine.trace_writer
    if traces is not None:
        lines += ["# HELP warmline_sip_traces_waiting Ended calls' SIP traces not stored yet.",
                  "# TYPE warmline_sip_traces_waiting gauge",
                  f"warmline_sip_traces_waiting {len(traces.writing)}",
                  "# HELP warmline_sip_traces_dropped_total Traces not kept: too many waiting.",
                  "# TYPE warmline_sip_traces_dropped_total counter",
                  f"warmline_sip_traces_dropped_total {traces.dropped}"]
    if engine.records is not None:
        records = engine.records
        lines += ["# HELP warmline_records_pending Events not yet in the database "
                  "(in the local journal or, if it cannot be written, in memory).",
                  "# TYPE warmline_records_pending gauge",
                  f"warmline_records_pending {records.pending}",
                  "# HELP warmline_records_journal_failures_total Events the local journal "
                  "could not take (disk full?): held in memory instead.",
                  "# TYPE warmline_records_journal_failures_total counter",
                  f"warmline_records_journal_failures_total {records.journal_failures}",
                  "# HELP warmline_records_lost_total Events dropped: journal failing and "
                  "memory full.",
                  "# TYPE warmline_records_lost_total counter",
                  f"warmline_records_lost_total {records.lost}"]
    return "\n".join(lines) + "\n"
