"""The set of registries and the plugin manager that fills them."""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass, field, fields
from importlib.metadata import entry_points
from typing import Any

import pluggy

from mmfw import hookspecs
from mmfw.registry import PluginLoadError, Registry

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mmfw.plugins"
DISABLE_AUTOLOAD_ENV = "MMFW_DISABLE_PLUGIN_AUTOLOAD"


@dataclass
class Registries:
    """Every registry, one per component kind. Passed to whatever needs to resolve a component name."""

    vision_encoders: Registry = field(default_factory=lambda: Registry("vision encoder"))
    connectors: Registry = field(default_factory=lambda: Registry("connector"))
    llms: Registry = field(default_factory=lambda: Registry("llm"))
    image_strategies: Registry = field(default_factory=lambda: Registry("image strategy"))
    executors: Registry = field(default_factory=lambda: Registry("sweep executor"))
    """Where ``mmfw sweep`` runs its jobs (:mod:`mmfw.sweep.executors`)."""

    def kinds(self) -> dict[str, Registry]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

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


def make_plugin_manager(load_entry_points: bool | None = None, extra_plugins: list[Any] = ()) -> pluggy.PluginManager:
    """A plugin manager with the built-in plugin, entry-point plugins (unless disabled) and ``extra_plugins``."""
    from mmfw import builtin

    pm = pluggy.PluginManager("mmfw")
    pm.add_hookspecs(hookspecs)
    pm.register(builtin, name="mmfw.builtin")
    if load_entry_points is None:
        load_entry_points = os.environ.get(DISABLE_AUTOLOAD_ENV, "") in ("", "0")
    if load_entry_points:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else "?"
            try:
                plugin = ep.load()
            except Exception as e:  # a broken third-party package: name it instead of a traceback from its import
                raise PluginLoadError(
                    f"plugin {dist}:{ep.name} (entry point {ep.value!r} in group {ENTRY_POINT_GROUP!r}) cannot be "
                    f"imported: {type(e).__name__}: {e}. Fix or uninstall the package {dist!r}, or set "
                    f"{DISABLE_AUTOLOAD_ENV}=1 to run without installed plugins") from e
            pm.register(plugin, name=f"{dist}:{ep.name}")
    for i, plugin in enumerate(extra_plugins):
        pm.register(plugin, name=getattr(plugin, "__name__", f"extra-plugin-{i}"))
    return pm


def collect_registries(pm: pluggy.PluginManager) -> Registries:
    """Run every plugin's ``mmfw_register_components`` into fresh registries, recording each plugin as source."""
    registries = Registries()
    for impl in pm.hook.mmfw_register_components.get_hookimpls():
        impl.function(registries=registries.scoped(impl.plugin_name))
    return registries


@functools.cache
def default_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager used by the CLI (built-ins + installed entry points)."""
    return make_plugin_manager()


@functools.cache
def default_registries() -> Registries:
    """Registries filled by :func:`default_plugin_manager`; for the CLI and interactive use."""
    return collect_registries(default_plugin_manager())
