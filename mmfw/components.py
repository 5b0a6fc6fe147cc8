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
from mmfw.errors import PluginLoadError

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
