"""The fast build: what setup.py compiles is what runs, and --version says so."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from warmline.sip.compiled import compiled_modules

ROOT = Path(__file__).resolve().parents[2]


def _setup_list(name: str) -> list[str]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == name:
            return list(ast.literal_eval(node.value))
    raise AssertionError(f"setup.py has no {name}")


def test_setup_compiles_every_module_of_the_sip_core_that_runs_compiled() -> None:
    listed = {Path(path).stem for path in _setup_list("SIP_CORE")}
    assert all((ROOT / path).is_file() for path in _setup_list("SIP_CORE"))
    running = {path.name.split(".", 1)[0] for path in compiled_modules()}
    # the pure-Python run of the unit tests has none; the run on the build has them all
    assert running in (set(), listed), running ^ listed


def test_the_sdist_carries_the_c_sources_tests_and_licence() -> None:
    manifest = (ROOT / "MANIFEST.in").read_text()
    for needed in ("LICENSE", "setup.py", "mypyc.ini", "graft tests", "graft bench",
                   "graft scripts", "*.c"):
        assert needed in manifest, needed
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    assert 'license = "Apache-2.0"' in (ROOT / "pyproject.toml").read_text()


def test_version_says_what_runs_compiled() -> None:
    shown = subprocess.run([sys.executable, "-m", "warmline", "--version"],
                           capture_output=True, text=True, timeout=60, check=True).stdout
    assert "SIP core" in shown and "relay fast path" in shown, shown
