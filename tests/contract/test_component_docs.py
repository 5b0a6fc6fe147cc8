"""The generated component reference pages are up to date with the registered components."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mmfw.components import collect_registries, make_plugin_manager

GENERATOR = Path(__file__).resolve().parents[2] / "docs" / "gen_component_docs.py"


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("gen_component_docs", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pages_are_up_to_date(gen) -> None:
    registries = collect_registries(make_plugin_manager(load_entry_points=False))  # mmfw's own components only
    for kind, (file_name, _) in gen.PAGES.items():
        page = gen.OUT_DIR / file_name
        assert page.exists() and page.read_text(encoding="utf-8") == gen.render(registries, kind), (
            f"{page} is out of date: run python docs/gen_component_docs.py")
        for name in getattr(registries, kind).names():
            assert f"## `{name}`" in page.read_text(encoding="utf-8")
