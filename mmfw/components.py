"""The plugin manager and the registries it fills: built-in components, installed plugins, extra plugins.

Above the component packages (the built-in plugin, :mod:`mmfw.builtin`, imports them all); :class:`Registries` itself
is declared with the component kinds in :mod:`mmfw.config.kinds` and re-exported here.
"""

from __future__ import annotations

import functools
import logging
import os
from importlib.metadata import entry_points
from typing import Any

import pluggy

from mmfw import builtin, hookspecs
from mmfw.config.kinds import Registries
from mmfw.errors import DuplicateComponentError

__all__ = ["DISABLE_AUTOLOAD_ENV", "ENTRY_POINT_GROUP", "Registries", "collect_registries", "default_plugin_manager",
           "default_registries", "make_plugin_manager"]

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "mmfw.plugins"
DISABLE_AUTOLOAD_ENV = "MMFW_DISABLE_PLUGIN_AUTOLOAD"


def make_plugin_manager(load_entry_points: bool | None = None, extra_plugins: list[Any] = ()) -> pluggy.PluginManager:
    """A plugin manager with the built-in plugin, entry-point plugins (unless disabled) and ``extra_plugins``."""
    pm = pluggy.PluginManager("mmfw")
    pm.add_hookspecs(hookspecs)
    pm.register(builtin, name="mmfw.builtin")
    pm.mmfw_load_failures = {}  # type: ignore[attr-defined]  # plugin name -> why it could not be imported
    if load_entry_points is None:
        load_entry_points = os.environ.get(DISABLE_AUTOLOAD_ENV, "") in ("", "0")
    if load_entry_points:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist = ep.dist.name if ep.dist is not None else "?"
            try:
                plugin = ep.load()
                pm.register(plugin, name=f"{dist}:{ep.name}")
            except Exception as e:  # a broken third-party package: name it, and keep everything else working
                pm.mmfw_load_failures[f"{dist}:{ep.name}"] = (  # type: ignore[attr-defined]
                    f"entry point {ep.value!r} cannot be imported: {type(e).__name__}: {e}")
    for i, plugin in enumerate(extra_plugins):
        pm.register(plugin, name=getattr(plugin, "__name__", f"extra-plugin-{i}"))
    return pm


def collect_registries(pm: pluggy.PluginManager) -> Registries:
    """Run every plugin's ``mmfw_register_components`` into fresh registries, recording each plugin as source.

    A plugin whose import or hook fails, that registers a component whose config has no ``type``, or a name another
    plugin already has, is left out as a whole and recorded in :attr:`Registries.plugin_failures` (with a warning
    naming it, its entry point and the error); the built-in components and every other plugin keep working.
    """
    registries = Registries()
    registries.plugin_failures.update(getattr(pm, "mmfw_load_failures", {}))
    impls = sorted(pm.hook.mmfw_register_components.get_hookimpls(), key=lambda i: i.plugin_name != "mmfw.builtin")
    for impl in impls:
        scratch = Registries()
        try:
            impl.function(registries=scratch.scoped(impl.plugin_name))
            for kind, registry in scratch.kinds().items():
                target = getattr(registries, kind)
                for entry in registry.entries():
                    if entry.name in target:
                        raise DuplicateComponentError(
                            f"{target.kind} {entry.name!r} is registered twice: by {target.entry(entry.name).source} "
                            f"and by {entry.source}")
        except Exception as e:
            if impl.plugin_name == "mmfw.builtin":
                raise
            registries.plugin_failures[impl.plugin_name] = f"mmfw_register_components failed: {type(e).__name__}: {e}"
            continue
        for kind, registry in scratch.kinds().items():
            target = getattr(registries, kind)
            for entry in registry.entries():
                target.register(entry.obj, name=entry.name, config=entry.config, source=entry.source)
    for name, why in registries.plugin_failures.items():
        logger.warning("plugin %s is disabled: %s. Fix or uninstall it, or set %s=1 to run without installed "
                       "plugins", name, why, DISABLE_AUTOLOAD_ENV)
    return registries


@functools.cache
def default_plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager used by the CLI (built-ins + installed entry points)."""
    return make_plugin_manager()


@functools.cache
def default_registries() -> Registries:
    """Registries filled by :func:`default_plugin_manager`; for the CLI and interactive use."""
    return collect_registries(default_plugin_manager())
