"""Parametrisation of the contract tests over every registry entry.

A test asking for ``encoder_name``, ``connector_name``, ``llm_name`` or ``strategy_name`` runs once per registered
component of that kind, ``component`` once per component of any kind, and ``vlm_combo`` once per (encoder,
connector, llm, strategy) combination (module scope: one model per combination and module) so that every
component is part of a full model at least once. Components are
built from their config's ``example()`` (see :meth:`mmfw.config.base.ComponentConfig.example`), so registering a
component is enough to have it tested.
"""

from __future__ import annotations

import pytest
from contract_utils import KIND_FIXTURES, REGISTRIES, all_components, vlm_combos


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "component" in metafunc.fixturenames:
        metafunc.parametrize("component", all_components(REGISTRIES), ids=lambda c: f"{c[0]}:{c[1]}")
    for fixture, kind in KIND_FIXTURES.items():
        if fixture in metafunc.fixturenames:
            metafunc.parametrize(fixture, getattr(REGISTRIES, kind).names())
    if "vlm_combo" in metafunc.fixturenames:
        metafunc.parametrize("vlm_combo", vlm_combos(REGISTRIES), ids=lambda c: "-".join(c), scope="module")


@pytest.fixture(scope="session")
def registries():
    """The registries the tests are parametrised over (built-ins and installed plugins)."""
    return REGISTRIES
