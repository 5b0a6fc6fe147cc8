"""Parametrisation of the contract tests over every registry entry and every contract of its kind.

A test asking for ``case`` runs once per (registered component, contract of its kind) pair, with the component built
from its config's ``example()`` (see :meth:`mmfw.config.base.ComponentConfig.example`), so registering a component
is enough to have it held to every contract of :mod:`mmfw.testing`, the kit plugin packages call from their own
tests. Installed plugins are included (set ``MMFW_DISABLE_PLUGIN_AUTOLOAD=1`` to test the built-ins alone).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mmfw.components import Registries
from mmfw.testing import KINDS, ComponentUnderTest, contracts, installed_registries

REGISTRIES: Registries = installed_registries()


def cases(registries: Registries) -> list[tuple[str, str, str]]:
    """(kind, component name, contract name) for every registered component and every contract of its kind."""
    return [(kind, name, c.name) for kind in KINDS for name in getattr(registries, kind).names()
            for c in contracts(kind)]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" in metafunc.fixturenames:
        metafunc.parametrize("case", cases(REGISTRIES), ids=lambda c: ":".join(c))


@pytest.fixture(scope="session")
def registries() -> Registries:
    """The registries the tests are parametrised over (built-ins and installed plugins)."""
    return REGISTRIES


@pytest.fixture(scope="session")
def under_test(tokenizer_dir: Path):
    """``under_test(kind, name)``: the :class:`~mmfw.testing.ComponentUnderTest`, one per component and session
    (so the contracts of one component share its built model)."""
    made: dict[tuple[str, str], ComponentUnderTest] = {}

    def get(kind: str, name: str) -> ComponentUnderTest:
        if (kind, name) not in made:
            made[kind, name] = ComponentUnderTest(kind, name, registries=REGISTRIES, tokenizer_dir=tokenizer_dir)
        return made[kind, name]

    return get
