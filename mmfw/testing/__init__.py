"""The plugin author's kit: mmfw's component contracts as functions a package calls from its own tests.

Every contract that mmfw's own ``tests/contract`` runs over each registered component is here, so a third-party
component is held to exactly the same promises::

    from mmfw.testing import check_connector

    def test_my_connector_keeps_the_contracts():
        check_connector("my-connector")        # a registered name (installed plugins included), or a config

A broken promise raises :class:`ContractViolation` (an ``AssertionError``), one line per broken contract that names
the component, the contract and what to fix. pytest is not needed to import or run the kit.

* :func:`check_component` (and :func:`check_vision_encoder`, :func:`check_connector`, :func:`check_llm`,
  :func:`check_image_strategy`): every contract of the kind, or ``only=[...]`` / ``skip=[...]`` of them;
* :func:`contracts` lists the contracts of a kind (name and summary), :class:`ComponentUnderTest` runs them one at a
  time (``.check(name)``) and caches what they share (the built model);
* :func:`installed_registries` (mmfw + installed plugins + plugin modules passed in) and :func:`tiny_tokenizer_dir`
  (the small offline tokenizer LLM examples are built over).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmfw.testing.core import (
    BASE_COMBO,
    KINDS,
    ComponentUnderTest,
    Contract,
    ContractViolation,
    contracts,
    installed_registries,
    missing_grads,
    tiny_tokenizer_dir,
)

if TYPE_CHECKING:
    from mmfw.components import Registries
    from mmfw.config.base import ComponentConfig

__all__ = ["BASE_COMBO", "KINDS", "ComponentUnderTest", "Contract", "ContractViolation", "check_component",
           "check_connector", "check_image_strategy", "check_llm", "check_vision_encoder", "contracts",
           "installed_registries", "missing_grads", "tiny_tokenizer_dir"]


def check_component(kind: str, component: str | ComponentConfig, *, registries: Registries | None = None,
                    plugins: Sequence[Any] = (), tokenizer_dir: str | Path | None = None,
                    partners: dict[str, str | ComponentConfig] | None = None, only: Iterable[str] | None = None,
                    skip: Iterable[str] = ()) -> list[str]:
    """Check every contract of ``kind`` (``"vision_encoders"``, ``"connectors"``, ``"llms"``,
    ``"image_strategies"``) on ``component``: a registry name (built from its config's ``example()``) or a config.

    ``registries`` defaults to mmfw + installed plugins + ``plugins`` (hook modules not installed yet);
    ``partners`` (kind -> name or config) replaces the base components of the whole-model checks. Returns the names
    of the contracts checked and kept (not those that do not apply); raises :class:`ContractViolation` listing every broken one.
    """
    cut = ComponentUnderTest(kind, component, registries=registries, plugins=plugins, tokenizer_dir=tokenizer_dir,
                             partners=partners)
    return cut.check_all(only=only, skip=skip)


def check_vision_encoder(component: str | ComponentConfig, **kwargs: Any) -> list[str]:
    """:func:`check_component` for a vision encoder."""
    return check_component("vision_encoders", component, **kwargs)


def check_connector(component: str | ComponentConfig, **kwargs: Any) -> list[str]:
    """:func:`check_component` for a connector."""
    return check_component("connectors", component, **kwargs)


def check_llm(component: str | ComponentConfig, **kwargs: Any) -> list[str]:
    """:func:`check_component` for an LLM (configs are built over :func:`tiny_tokenizer_dir` unless given)."""
    return check_component("llms", component, **kwargs)


def check_image_strategy(component: str | ComponentConfig, **kwargs: Any) -> list[str]:
    """:func:`check_component` for an image strategy."""
    return check_component("image_strategies", component, **kwargs)
