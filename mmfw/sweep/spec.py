"""The sweep file: a base experiment config, the axes that vary, the seeds, the main metric and where the study lives.

::

    base: ../quickstart.yaml                 # relative to this file
    set: {training.max_steps: 200}           # applied to every point
    grid:                                    # cartesian product of the axes
      model.connector:                       # a list of values, or a mapping label -> value
        mlp: {type: mlp}
        resampler: {type: resampler, num_queries: 16}
    zip:                                     # axes that vary together (equal lengths)
      training.learning_rate: [1.0e-3, 3.0e-4]
      training.warmup_ratio: [0.05, 0.1]
    seeds: [0, 1]
    metric: eval.accuracy
    higher_is_better: true
    output_dir: runs/sweeps/connector

Axis keys are dotted config paths (as ``--set`` takes them); values are merged with the config loader's rules, so a
value with another ``type`` replaces the whole component mapping.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from mmfw.config import ConfigError, StrictModel
from mmfw.config.loader import format_validation_error

AxisValues = Annotated[list[Any] | dict[str, Any], Field()]
"""A list of values, or a mapping of short labels to values."""

_KEY = r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$"


def _check_axes(axes: dict[str, Any], what: str) -> dict[str, Any]:
    for key, values in axes.items():
        if not _is_dotted(key):
            raise ValueError(f"{what} key {key!r} is not a dotted config path (e.g. model.connector.depth)")
        if len(values) == 0:
            raise ValueError(f"{what}.{key}: an axis needs at least one value")
        if isinstance(values, dict) and isinstance(values.get("type"), str):
            raise ValueError(f"{what}.{key}: a single component mapping; an axis takes a list of values "
                             "([{type: ...}, ...]) or a mapping of labels to values")
    return axes


def _is_dotted(key: str) -> bool:
    return bool(re.match(_KEY, key))


class ExecutorSection(StrictModel):
    """``executor``: the default executor and its settings (checked against the executor's own config class)."""

    model_config = {**StrictModel.model_config, "extra": "allow"}
    type: str = "local"


class SweepConfig(StrictModel):
    """A study: every point of ``grid`` x ``zip`` over ``base`` (+ ``set``), each trained once per seed."""

    base: str
    """The experiment config every point starts from (path relative to the sweep file)."""
    set: dict[str, Any] = {}
    """Dotted overrides applied to every point (before the axis values)."""
    grid: dict[str, AxisValues] = {}
    """Axes expanded as a cartesian product, first axis slowest."""
    zip: dict[str, AxisValues] = {}
    """Axes that vary together: all of the same length; the i-th values form one step of one more grid axis."""
    seeds: list[int] = Field([0], min_length=1)
    """Every point is trained once per seed (the experiment's ``seed``)."""
    metric: str = "eval.accuracy"
    """The main metric: a key of the runs' ``metrics.json`` (``group.name``, e.g. ``eval.accuracy/count``)."""
    higher_is_better: bool = True
    output_dir: str | None = None
    """Where the study lives (relative to the working directory); default ``runs/sweeps/<sweep file name>``."""
    optional: list[str] = []
    """Labels of points left out (with a note) when they do not validate, e.g. a point whose component comes from a
    plugin that may not be installed. Every other point must validate."""
    executor: ExecutorSection = ExecutorSection()
    """The executor used without ``--executor`` and its settings, e.g. ``{type: slurm, partition: cpu}``."""

    @field_validator("set")
    @classmethod
    def _set_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key in v:
            if not _is_dotted(key):
                raise ValueError(f"key {key!r} is not a dotted config path (e.g. training.max_steps)")
        return v

    @field_validator("grid")
    @classmethod
    def _grid(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _check_axes(v, "grid")

    @field_validator("zip")
    @classmethod
    def _zip(cls, v: dict[str, Any]) -> dict[str, Any]:
        _check_axes(v, "zip")
        lengths = {k: len(x) for k, x in v.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f"zip axes must have the same number of values, got {lengths}")
        labelled = [k for k, x in v.items() if isinstance(x, dict)]
        if labelled and len(labelled) > 1:
            raise ValueError(f"give labels on one zip axis only (a mapping), not on {labelled}")
        return v

    @field_validator("seeds")
    @classmethod
    def _unique_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError(f"seeds repeat: {v}")
        return v

    @model_validator(mode="after")
    def _disjoint(self) -> SweepConfig:
        both = sorted(set(self.grid) & set(self.zip))
        if both:
            raise ValueError(f"{both} appear in both grid and zip")
        for key in (*self.grid, *self.zip):
            if key == "seed":
                raise ValueError("vary the seed with seeds:, not as an axis")
            if key in ("output_dir", "name"):
                raise ValueError(f"{key} is set by the sweep for every run; it cannot be an axis")
        return self


def load_sweep(path: str | Path) -> SweepConfig:
    """Read and validate a sweep file; every problem is one ``"file: yaml.path: message"`` line."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError([f"sweep file not found: {path}"]) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{where}invalid YAML: {getattr(e, 'problem', e)}"], source=str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError(["top level must be a mapping"], source=str(path))
    try:
        return SweepConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, data), source=str(path)) from None


def default_output_dir(path: str | Path) -> str:
    return str(Path("runs") / "sweeps" / Path(path).stem)
