"""Plugins: built-ins register through the hook; third-party packages are found through entry points."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from mmfw.components import collect_registries, make_plugin_manager

PLUGIN_SOURCE = '''
from typing import Literal
import torch
from mmfw import hookimpl
from mmfw.config.base import ConnectorConfig
from mmfw.connectors.base import Connector
from mmfw.registry import component


class HalfConfig(ConnectorConfig):
    type: Literal["{name}"] = "{name}"


@component("{name}", config=HalfConfig)
class Half(Connector):
    def __init__(self, cfg, in_dim, out_dim):
        super().__init__(cfg, in_dim, out_dim)
        self.proj = torch.nn.Linear(in_dim, out_dim)

    def num_tokens(self, grid):
        return grid[0] * grid[1]

    def forward(self, features, grid):
        return self.proj(features) * 0.5


@hookimpl
def mmfw_register_components(registries):
    registries.connectors.register(Half)
'''


def make_distribution(root: Path, dist: str, module: str, component_name: str) -> None:
    """A minimal installed distribution (module + dist-info with an mmfw.plugins entry point) under ``root``."""
    (root / f"{module}.py").write_text(PLUGIN_SOURCE.replace("{name}", component_name))
    info = root / f"{dist}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(f"""\
        [mmfw.plugins]
        {module} = {module}
        """))


@pytest.fixture
def on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in list(sys.modules):
        if name.startswith("fake_mmfw_plugin"):
            del sys.modules[name]


def test_builtins_are_registered_with_their_source() -> None:
    regs = collect_registries(make_plugin_manager(load_entry_points=False))
    assert {"clip"} <= set(regs.vision_encoders.names())
    assert {"mlp"} <= set(regs.connectors.names())
    assert {"llama"} <= set(regs.llms.names())
    assert {"resize", "pad"} <= set(regs.image_strategies.names())
    assert regs.connectors.entry("mlp").source.startswith("mmfw.builtin (mmfw.connectors.mlp.MLPConnector")


def test_entry_point_plugin_is_discovered(on_path: Path) -> None:
    make_distribution(on_path, "fake-mmfw-plugin", "fake_mmfw_plugin_a", "half")
    regs = collect_registries(make_plugin_manager(load_entry_points=True))
    entry = regs.connectors.entry("half")
    assert entry.source.startswith("fake-mmfw-plugin:fake_mmfw_plugin_a")
    cfg = entry.config()
    import torch

    out = regs.connectors.build(cfg, in_dim=4, out_dim=6)(torch.ones(1, 2, 4), (1, 2))
    assert out.shape == (1, 2, 6)


def test_autoload_can_be_disabled(on_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_distribution(on_path, "fake-mmfw-plugin", "fake_mmfw_plugin_b", "half")
    monkeypatch.setenv("MMFW_DISABLE_PLUGIN_AUTOLOAD", "1")
    regs = collect_registries(make_plugin_manager())
    assert "half" not in regs.connectors


def test_plugin_name_clash_with_builtin_is_loud(on_path: Path) -> None:
    make_distribution(on_path, "evil-plugin", "fake_mmfw_plugin_c", "mlp")
    regs = collect_registries(make_plugin_manager(load_entry_points=True))
    msg = regs.plugin_failures["evil-plugin:fake_mmfw_plugin_c"]
    assert "DuplicateComponentError" in msg and "'mlp'" in msg and "mmfw.builtin" in msg and "evil-plugin" in msg
    assert regs.connectors.entry("mlp").source.startswith("mmfw.builtin")  # the built-in one is kept


def test_a_plugin_that_cannot_be_imported_is_named(on_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_distribution(on_path, "broken-plugin", "fake_mmfw_plugin_d", "half")
    (on_path / "fake_mmfw_plugin_d.py").write_text("from mmfw.connectors.base import no_such_name\n")
    regs = collect_registries(make_plugin_manager(load_entry_points=True))
    msg = regs.plugin_failures["broken-plugin:fake_mmfw_plugin_d"]
    assert "ImportError" in msg and "no_such_name" in msg and "fake_mmfw_plugin_d" in msg
    assert "mlp" in regs.connectors  # everything else keeps working
    from mmfw.cli.main import main
    from mmfw.components import default_plugin_manager, default_registries

    default_plugin_manager.cache_clear()
    default_registries.cache_clear()
    try:
        assert main(["list", "connectors"]) == 0
    finally:
        default_plugin_manager.cache_clear()
        default_registries.cache_clear()
    out, err = capsys.readouterr()
    assert "mlp" in out and "Traceback" not in err
