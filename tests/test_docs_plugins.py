"""docs/plugins.md is true: its plugin files, written out as they stand, make a plugin that the kit passes, its test
file runs under pytest with the plugin installed, and the broken variant it describes fails as shown."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from mmfw.testing import ContractViolation, check_connector

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "plugins.md"


def doc_files() -> dict[str, str]:
    """The fenced python/toml blocks of the page whose first line is ``# <path>``."""
    files = {}
    for body in re.findall(r"```(?:python|toml)\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S):
        first = body.splitlines()[0]
        if re.fullmatch(r"# [\w./-]+\.(py|toml)", first):
            files[first[2:]] = body
    return files


def write_package(root: Path, files: dict[str, str], package: str = "mmfw_maxpool", install: bool = True) -> None:
    """The doc's files under ``root``; ``install``: with a dist-info holding the entry points of its pyproject.toml."""
    for rel, body in files.items():
        path = root / rel.replace("mmfw_maxpool", package)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body.replace("mmfw_maxpool", package), encoding="utf-8")
    if not install:
        return
    entry = re.search(r'\[project\.entry-points\."mmfw\.plugins"\]\n(\w+) = "([\w.]+)"', files["pyproject.toml"])
    info = root / f"{package}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {package.replace('_', '-')}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(f"""\
        [mmfw.plugins]
        {entry.group(1)} = {entry.group(2).replace("mmfw_maxpool", package)}
        """))


def test_the_page_has_every_file_of_the_plugin() -> None:
    assert set(doc_files()) == {"mmfw_maxpool/connector.py", "mmfw_maxpool/plugin.py", "mmfw_maxpool/__init__.py",
                                "pyproject.toml", "tests/test_maxpool.py"}


def test_the_plugins_tests_pass_with_the_plugin_installed(tmp_path: Path) -> None:
    write_package(tmp_path, doc_files())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO), os.environ.get("PYTHONPATH", "")]),
           "MMFW_DISABLE_PLUGIN_AUTOLOAD": "0"}
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:cacheprovider",
                           "tests"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert re.search(r"\b16 passed\b", proc.stdout), proc.stdout[-500:]  # 2 whole checks + 14 single contracts


def test_the_broken_variant_fails_as_the_page_shows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = doc_files()
    files["mmfw_maxpool/connector.py"] = files["mmfw_maxpool/connector.py"].replace(", ceil_mode=True", "")
    write_package(tmp_path, files, package="doc_broken_maxpool", install=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    import doc_broken_maxpool.plugin as plugin

    with pytest.raises(ContractViolation) as err:
        check_connector("max-pool", plugins=[plugin])  # not installed: registered from the module
    shown = re.search(r"```text\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S).group(1)
    assert str(err.value) == shown.strip()
    for name in [m for m in sys.modules if m.startswith("doc_broken_maxpool")]:
        del sys.modules[name]
