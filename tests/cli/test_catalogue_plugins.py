"""Broken plugins, through the CLI: reported once by name and entry point, everything else keeps working, a config
that uses one says that its plugin failed, and a run trained with a plugin that is gone names the package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli.catalogue_utils import assert_fails, assert_ok, cli, write_config
from tests.test_plugins import make_distribution


@pytest.fixture
def on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    import sys

    from mmfw.components import default_plugin_manager, default_registries

    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("MMFW_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    default_plugin_manager.cache_clear()
    default_registries.cache_clear()
    yield tmp_path
    default_plugin_manager.cache_clear()
    default_registries.cache_clear()
    for name in list(sys.modules):
        if name.startswith("fake_mmfw_plugin"):
            del sys.modules[name]


BROKEN = {
    "hook-raises": ("registries.connectors.register(Half)", "raise RuntimeError('the hook exploded')",
                    "the hook exploded"),
    "import-fails": (None, None, "no_such_module"),
    "config-without-type": ("class HalfConfig(ConnectorConfig):\n    type: Literal",
                            "from pydantic import BaseModel\nclass HalfConfig(BaseModel):\n    width: int = 1\n"
                            "class _Unused(ConnectorConfig):\n    type: Literal", "no 'type' field"),
    "duplicate-of-builtin": (None, None, "registered twice"),
}


def _broken(root: Path, kind: str, module: str) -> str:
    name = "mlp" if kind == "duplicate-of-builtin" else "half"
    make_distribution(root, f"broken-{kind}", module, name)
    src = root / f"{module}.py"
    old, new, _ = BROKEN[kind]
    if kind == "import-fails":
        src.write_text("import no_such_module\n")
    elif old is not None:
        text = src.read_text()
        assert old in text
        src.write_text(text.replace(old, new, 1))
    return f"broken-{kind}:{module}"


@pytest.mark.parametrize("kind", list(BROKEN))
def test_broken_plugin_list_keeps_working(kind: str, on_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    plugin = _broken(on_path, kind, f"fake_mmfw_plugin_{kind.replace('-', '_')}")
    with caplog.at_level("WARNING"):
        res = cli(["list", "connectors"])
    assert_ok(res, "mlp", "patch-merger")
    warnings = [r.getMessage() for r in caplog.records if plugin in r.getMessage()]
    assert len(warnings) == 1 and BROKEN[kind][2] in warnings[0], warnings  # reported once, with the error


@pytest.mark.parametrize("kind", ["hook-raises", "import-fails"])
def test_broken_plugin_other_configs_still_check(kind: str, on_path: Path, ctx_config: Path) -> None:
    _broken(on_path, kind, f"fake_mmfw_plugin_x_{kind.replace('-', '_')}")
    assert_ok(cli(["data", "check", ctx_config, "--limit", "2"]))


def test_config_using_a_broken_plugin_says_so(on_path: Path, ctx_config: Path, tmp_path: Path) -> None:
    plugin = _broken(on_path, "hook-raises", "fake_mmfw_plugin_user")
    cfg = yaml.safe_load(ctx_config.read_text())
    cfg["model"]["connector"] = {"type": "half"}
    res = cli(["data", "check", write_config(tmp_path / "uses.yaml", cfg)])
    assert_fails(res, "model.connector.type: unknown type 'half'", f"plugin {plugin} failed to load",
                 "the hook exploded")


def test_run_trained_with_an_uninstalled_plugin_names_the_package(on_path: Path, ctx_config: Path,
                                                                   tmp_path: Path) -> None:
    from mmfw.components import default_registries
    from mmfw.config import load_config_dict, save_config

    make_distribution(on_path, "fake-half-plugin", "fake_mmfw_plugin_half", "half")
    cfg = yaml.safe_load(ctx_config.read_text())
    cfg["model"]["connector"] = {"type": "half"}
    saved = save_config(load_config_dict(cfg, default_registries()), tmp_path / "run" / "config.yaml")
    assert "fake-half-plugin" in saved.read_text().splitlines()[0]
    # the package is uninstalled
    for p in on_path.glob("fake-half-plugin*"):
        import shutil

        shutil.rmtree(p)
    (on_path / "fake_mmfw_plugin_half.py").unlink()
    from mmfw.components import default_plugin_manager

    default_plugin_manager.cache_clear()
    default_registries.cache_clear()
    res = cli(["data", "check", saved])
    assert_fails(res, "unknown type 'half'", "model.connector 'half' from the package fake-half-plugin",
                 "pip install fake-half-plugin")


@pytest.fixture
def ctx_config(tiny_experiment: dict[str, Any], tmp_path: Path) -> Path:
    exp = dict(tiny_experiment)
    exp["training"] = {**exp["training"], "trackers": []}
    return write_config(tmp_path / "exp.yaml", exp)
