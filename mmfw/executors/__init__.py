"""Sweep executors: ``local`` (default), ``slurm`` (submitit) and ``ray``; see :mod:`mmfw.executors.base`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from mmfw.config import ConfigError
from mmfw.config.loader import format_validation_error

if TYPE_CHECKING:
    from mmfw.config.kinds import Registries
    from mmfw.executors.base import SweepExecutor


def build_executor(registries: Registries, section: dict[str, Any], name: str | None, *, study_dir: Path,
                   parallel: int, source: str | None = None) -> SweepExecutor:
    """The executor ``name`` (default: the sweep file's ``executor.type``), configured from the ``executor:``
    section when it names the same executor (else with that executor's defaults)."""
    name = name or section.get("type", "local")
    settings = section if section.get("type", "local") == name else {}
    cfg_cls = registries.executors.config_class(name)
    try:
        cfg = cfg_cls.model_validate({**settings, "type": name})
    except ValidationError as err:
        raise ConfigError([f"executor.{p}" for p in format_validation_error(err, settings)], source=source) from None
    return registries.executors.get(name)(cfg, study_dir=study_dir, parallel=parallel)
