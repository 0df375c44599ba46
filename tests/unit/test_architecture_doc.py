"""docs/architecture.md stays true to the code: its module table lists exactly the modules."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "warmline"


def documented_modules() -> set[str]:
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    table = text.split("## Modules", 1)[1].split("\n## ", 1)[0]
    names: set[str] = set()
    for row in table.splitlines():
        if row.startswith("| `"):
            names.update(re.findall(r"`([\w/]+\.(?:py|c))`", row.split("|")[1]))
    return names


def source_modules() -> set[str]:
    files = [*PACKAGE.rglob("*.py"), *PACKAGE.rglob("*.c")]
    return {str(path.relative_to(PACKAGE)) for path in files if path.name != "__init__.py"}


def test_the_module_table_matches_the_files() -> None:
    documented, present = documented_modules(), source_modules()
    assert not present - documented, f"modules missing from the table: {present - documented}"
    assert not documented - present, f"rows for modules that are gone: {documented - present}"


def test_every_test_the_orderings_doc_names_exists() -> None:
    """docs/orderings.md cites a test for each ordering; a renamed test must update it."""
    text = (ROOT / "docs" / "orderings.md").read_text(encoding="utf-8")
    cited = {name for name in re.findall(r"`(test_\w+)`", text)}
    sources = "\n".join(path.read_text(encoding="utf-8")
                        for path in (ROOT / "tests").rglob("test_*.py"))
    missing = {name for name in cited if f"def {name}(" not in sources}
    assert cited and not missing, f"tests the doc cites that do not exist: {missing}"
