"""Handoff records: validation names the field, status only moves forward."""

from __future__ import annotations

import pytest

from warmline.api import http_status
from warmline.transfer.handoff import Destination, FallbackAction, Handoff, HandoffError


def handoff(**changes: object) -> Handoff:
    first = changes.pop("first", Destination("sip:human@127.0.0.1:5080", "bridge", 20))
    return Handoff("call-1", first, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(("bad", "status", "named"), [
    ({"first": Destination("http://x", "bridge", 5)}, 422, "to: 'http://x' must be a sip:"),
    ({"first": Destination("mailto:x@y", "bridge", 5)}, 422, "must be a sip:, sips: or tel:"),
    ({"first": Destination("sip:h@127.0.0.1", "psychic", 5)}, 422, "to: mode 'psychic'"),
    ({"first": Destination("sip:h@pbx?X-Inj=1&Subject=hi", "bridge", 5)}, 422,
     "carries URI headers (X-Inj, Subject)"),
    ({"first": Destination("sip:h@127.0.0.1", "warm", 0)}, 422, "to: timeout 0"),
    ({"first": Destination("sip:h@127.0.0.1", "warm", 5, accept="maybe")}, 422, "accept"),
    ({"fallback": [Destination("sip:", "bridge", 5)]}, 422, "fallback[0]: 'sip:'"),
    ({"fallback": ["somewhere"]}, 422, "fallback[0]: 'somewhere'"),
    ({"context": {"when": object()}}, 422, "context: not JSON"),
    ({"context": {"x": "y" * 70_000}}, 413, "context: 700"),
])
def test_bad_requests_are_refused_naming_the_field(bad: dict[str, object], status: int,
                                                   named: str) -> None:
    with pytest.raises(HandoffError) as refused:
        handoff(**bad).validate()
    assert http_status(refused.value) == status
    assert named in str(refused.value)


def test_a_good_handoff_validates_and_keeps_its_final_outcome() -> None:
    record = handoff(fallback=[Destination("sips:queue@pbx.example:5061", "warm", 30),
                               FallbackAction("voicemail"), "ai"], context={"intent": "x"})
    record.validate()
    record.progress("ringing", sip_status=180)
    record.finish("failed", "busy: 486", 486)
    record.finish("completed", "too late")  # an ended handoff stays ended
    record.progress("connected")
    assert (record.status, record.reason, record.sip_status) == ("failed", "busy: 486", 486)
    assert [event.kind for event in record.events] == ["requested", "ringing", "failed"]
    assert record.as_dict()["events"][-1]["sip_status"] == 486


def test_unknown_fallback_actions_are_refused() -> None:
    with pytest.raises(ValueError, match="'pray' is not one of"):
        FallbackAction("pray")
