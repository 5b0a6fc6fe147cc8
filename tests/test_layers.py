"""The layers point down only (import-linter contracts in pyproject.toml), and docs/architecture.md draws them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def _contracts() -> list[dict]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]


def test_the_contracts_hold(tmp_path) -> None:
    """``lint-imports``, in a subprocess (it reconfigures logging, which would mute the other tests' loggers)."""
    pytest.importorskip("importlinter.cli")
    code = ("import sys; from importlinter.cli import lint_imports; "
            f"sys.exit(lint_imports(config_filename={str(ROOT / 'pyproject.toml')!r}, cache_dir={str(tmp_path)!r}, "
            "no_logo=True))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_diagram_matches_the_layers_contract() -> None:
    (layers,) = [c["layers"] for c in _contracts() if c["type"] == "layers"]
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("## Layers", 1)[1].split("```", 2)[1]
    drawn = [re.split(r"\s{3,}", line.strip())[0] for line in block.splitlines()
             if line.strip() and line.strip() != "|" and not line.startswith(" " * 10)]
    assert drawn == layers


def test_every_subpackage_and_top_level_module_is_in_a_layer() -> None:
    (layers,) = [c["layers"] for c in _contracts() if c["type"] == "layers"]
    named = {m.strip() for layer in layers for m in re.split(r"[|:]", layer)}
    modules = {p.stem for p in (ROOT / "mmfw").glob("*.py") if p.stem != "__init__"}
    packages = {p.parent.name for p in (ROOT / "mmfw").glob("*/__init__.py")}
    assert modules | packages == named
