"""The component kinds, declared once, and :class:`Registries`, one registry per kind.

Everything that lists the kinds derives the list from :data:`KINDS`: the registries, the ``model:`` section of the
experiment config, the ``training.policy`` keys, the VLM's attributes, the exporter, ``mmfw inspect``, ``mmfw list``.
A new kind is one :class:`ComponentKind` entry here (plus its config base class and its contract).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from mmfw.config.base import (
    ComponentConfig,
    ConnectorConfig,
    ImageStrategyConfig,
    LLMConfig,
    VisionEncoderConfig,
)
from mmfw.registry import Registry

__all__ = ["KIND", "KINDS", "ComponentKind", "Registries"]


@dataclass(frozen=True)
class ComponentKind:
    """One kind of component (vision encoder, connector, ...)."""

    key: str
    """YAML key under ``model:`` and under ``training.policy``, and the VLM's attribute (``vision_encoder``)."""
    registry: str
    """Attribute of :class:`Registries` (``vision_encoders``)."""
    label: str
    """In messages: ``unknown vision encoder 'sigclip'``."""
    report_name: str
    """Row name in ``mmfw inspect`` (``vision``)."""
    config_base: type[ComponentConfig]
    """Base class of the kind's config classes (the ``model.<key>`` field's type)."""
    default_policy: Literal["frozen", "full"]
    """``training.policy.<key>`` when the config does not set it."""


KINDS: tuple[ComponentKind, ...] = (
    ComponentKind("vision_encoder", "vision_encoders", "vision encoder", "vision", VisionEncoderConfig, "frozen"),
    ComponentKind("connector", "connectors", "connector", "connector", ConnectorConfig, "full"),
    ComponentKind("llm", "llms", "llm", "llm", LLMConfig, "full"),
    ComponentKind("image_strategy", "image_strategies", "image strategy", "image_strategy", ImageStrategyConfig,
                  "full"),
)
"""Every component kind, in the order the VLM composes them (and configs list them)."""

KIND: dict[str, ComponentKind] = {k.key: k for k in KINDS}
"""The kinds by ``key``."""

OTHER_REGISTRIES: dict[str, str] = {"executors": "sweep executor"}
"""Registries of pluggable parts that are not model components (attribute: label): where ``mmfw sweep`` runs its
jobs (:mod:`mmfw.executors`)."""


class Registries:
    """Every registry, one per component kind (``registries.vision_encoders``...). Passed to whatever needs to
    resolve a component name; filled by plugins (:func:`mmfw.components.collect_registries`)."""

    def __init__(self) -> None:
        for kind in KINDS:
            setattr(self, kind.registry, Registry(kind.label))
        for name, label in OTHER_REGISTRIES.items():
            setattr(self, name, Registry(label))
        self.plugin_failures: dict[str, str] = {}
        """Plugins that failed to load or to register (``"dist:entry-point"`` -> the error); their components are
        not available, everything else is."""

    def __getattr__(self, name: str) -> Registry:  # typed access to the registries set in __init__
        raise AttributeError(f"{type(self).__name__} has no registry {name!r}; kinds: "
                             + ", ".join(k.registry for k in KINDS))

    def of(self, kind: ComponentKind | str) -> Registry:
        """The registry of ``kind`` (a :class:`ComponentKind` or its ``key``)."""
        return getattr(self, (KIND[kind] if isinstance(kind, str) else kind).registry)

    def kinds(self) -> dict[str, Registry]:
        """``{registry attribute: registry}`` for every kind, in :data:`KINDS` order, then :data:`OTHER_REGISTRIES`."""
        return {**{k.registry: getattr(self, k.registry) for k in KINDS},
                **{name: getattr(self, name) for name in OTHER_REGISTRIES}}

    def __iter__(self) -> Iterator[tuple[ComponentKind, Registry]]:
        return iter([(k, self.of(k)) for k in KINDS])

    def scoped(self, source: str) -> Registries:
        """A view whose ``register`` calls record ``source`` as the origin of each component."""
        return _ScopedRegistries(self, source)  # type: ignore[return-value]


class _ScopedRegistry:
    def __init__(self, registry: Registry, source: str) -> None:
        self._registry, self._source = registry, source

    def register(self, obj: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("source", f"{self._source} ({obj.__module__}.{obj.__qualname__})")
        return self._registry.register(obj, **kwargs)

    def __getattr__(self, item: str) -> Any:
        return getattr(self._registry, item)


class _ScopedRegistries:
    def __init__(self, registries: Registries, source: str) -> None:
        for name, reg in registries.kinds().items():
            setattr(self, name, _ScopedRegistry(reg, source))
