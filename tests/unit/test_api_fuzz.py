"""A bounded fuzz of the HTTP API from its own OpenAPI schema (schemathesis).

Every operation gets generated bodies and queries, valid and not, on a live
call (a random call id would only ever meet the 404): none may answer a 5xx.
The engine is real (a CallEngine over a SIP shell that never listens), its
calls stand-ins and its transfers run on the fake call control, so nothing is
dialled and the run takes seconds.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from tests.unit.test_pii_nowhere import Rig, rig  # noqa: F401  (the fixture)
from warmline.api import build_app

EXAMPLES = 25  # per operation: a few seconds in all


def test_no_generated_request_gets_a_server_error(rig: Rig) -> None:  # noqa: F811
    # the calls are stand-ins with no SIP dialog behind them: a hang-up is only noted
    rig.engine.switchboard.hang_up = lambda leg, reason=None: None  # type: ignore[method-assign]
    schema = schemathesis.openapi.from_asgi("/openapi.json", build_app(rig.engine))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10  # the schema was read, not skipped
    failures: list[str] = []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def call(case: schemathesis.Case) -> None:
            if isinstance(case.path_parameters, dict) and "call_id" in case.path_parameters:
                case.path_parameters["call_id"] = "call-pii-1"  # a live call, not a 404
            response = case.call()
            not_ready = case.formatted_path == "/readyz" and response.status_code == 503
            if response.status_code >= 500 and not not_ready:  # (this shell never listens)
                failures.append(f"{case.method} {case.formatted_path} {case.body}: "
                                f"{response.status_code} {response.text[:200]}")

        call()
    assert not failures, "\n".join(failures[:10])
