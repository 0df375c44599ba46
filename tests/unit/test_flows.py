"""Flow files: the example loads; broken references are refused at load, naming the step."""

from __future__ import annotations

from pathlib import Path

import pytest

from warmline.agents.scripted import FlowError, load_flow

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "menu.flow.toml"


def test_the_example_flow_loads() -> None:
    flow = load_flow(EXAMPLE)
    assert flow.start == "menu" and flow.steps["billing"].transfer is not None


@pytest.mark.parametrize(("text", "named"), [
    ('start = "nowhere"\n[steps.a]\nhangup = true\n', "start: no step named 'nowhere'"),
    ('start = "a"\n[steps.a]\nnext = "b"\n', "steps.a.next: no step named 'b'"),
    ('start = "a"\n[steps.a]\nsay = "hi"\n', "steps.a: needs exactly one of"),
    ('start = "a"\n[steps.a]\nhangup = true\nnext = "a"\n', "steps.a: needs exactly one of"),
    ('start = "a"\n[steps.a]\ntransfer = { to = "mailto:x@y" }\n',
     "steps.a.transfer.to: 'mailto:x@y' must be a sip:"),
    ('start = "a"\n[steps.a]\nplay = "/nonexistent.wav"\nhangup = true\n',
     "steps.a.play: audio file not found"),
    ('start = "a"\n[steps.a]\nhangup = true\nsing = "la"\n', "steps.a.sing"),
    ('start = "a"\n[steps.a\n', "not valid TOML"),
])
def test_broken_flows_name_the_step(tmp_path: Path, text: str, named: str) -> None:
    path = tmp_path / "flow.toml"
    path.write_text(text)
    with pytest.raises(FlowError) as broken:
        load_flow(path)
    assert named in str(broken.value), str(broken.value)
