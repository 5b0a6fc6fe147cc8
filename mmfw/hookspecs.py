"""The plugin API of mmfw: every hook a plugin may implement.

A plugin is a module (or object) with functions decorated by :data:`mmfw.hookimpl` whose names match the specs
below. Third-party packages declare one in their ``pyproject.toml``::

    [project.entry-points."mmfw.plugins"]
    my_plugin = "my_package.plugin"

Built-in components are registered by :mod:`mmfw.builtin`, a plugin like any other. Hooks are for behaviour
(fan-out); names are resolved through the registries, never through a hook. Set ``MMFW_DISABLE_PLUGIN_AUTOLOAD=1``
to skip entry-point discovery (built-ins are still loaded).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from mmfw.config.kinds import Registries

hookspec = pluggy.HookspecMarker("mmfw")


@hookspec
def mmfw_register_components(registries: Registries) -> None:
    """Register components: ``registries.vision_encoders.register(MyEncoder)`` and likewise for
    ``connectors``, ``llms`` and ``image_strategies`` (one registry per kind of :data:`mmfw.config.kinds.KINDS`),
    and ``executors`` for where ``mmfw sweep`` runs its jobs (a :class:`mmfw.executors.base.SweepExecutor`; the
    registries beside the model's kinds are :data:`mmfw.config.kinds.OTHER_REGISTRIES`).

    Each component class carries its name and config class (see :func:`mmfw.registry.component`). A name already
    registered by another plugin is an error naming both.
    """


@hookspec
def mmfw_train_start(config: Any, run_dir: Path) -> None:
    """Called once per training stage, before the first step, on every process."""


@hookspec
def mmfw_evaluation_end(metrics: dict[str, float], step: int, run_dir: Path) -> None:
    """Called after each evaluation with its metrics (main process only)."""


@hookspec
def mmfw_train_end(metrics: dict[str, float], run_dir: Path) -> None:
    """Called once a stage has finished and its final checkpoint is written (main process only)."""
