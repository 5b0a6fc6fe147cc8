"""The points of a sweep: ``grid`` x ``zip`` expanded into combinations of axis values, their labels and readable
values, and each point's config tree (the base with the point's values merged in by the loader's rules)."""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from mmfw.config.loader import apply_overrides
from mmfw.sweep.spec import SweepConfig


@dataclass(frozen=True)
class AxisValue:
    """One value of one axis: where it was written in the sweep file, its label and how it reads in a table."""

    where: str
    """YAML path in the sweep file, e.g. ``grid.model.connector[1]`` or ``zip.training.learning_rate[0]``."""
    values: dict[str, Any]
    """Dotted config key -> value (several keys for a zip step)."""
    label: str
    shown: dict[str, str]
    """Dotted config key -> readable value (a component shows its ``type`` and the fields written)."""


@dataclass(frozen=True)
class Point:
    """One combination of axis values."""

    index: int
    label: str
    choices: tuple[AxisValue, ...]

    @property
    def shown(self) -> dict[str, str]:
        return {k: v for c in self.choices for k, v in c.shown.items()}

    @property
    def overrides(self) -> dict[str, Any]:
        return {k: v for c in self.choices for k, v in c.values.items()}


def show_value(value: Any) -> str:
    """A short readable form of an axis value: ``3``, ``resampler(num_queries=16)``, ``lr=0.001, depth=2``."""
    if isinstance(value, Mapping):
        flat = _flatten(value)
        kind = flat.pop("type", None)
        inner = ", ".join(f"{k}={_scalar(v)}" for k, v in flat.items())
        if kind is not None:
            return f"{kind}({inner})" if inner else str(kind)
        return inner
    return _scalar(value)


def _flatten(value: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in value.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping) and "type" not in v:
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _scalar(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return show_value(value)
    return json.dumps(value, separators=(",", ":")) if isinstance(value, list | tuple | bool) or value is None \
        else str(value)


def slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.")
    return (s or "point")[:48]


def _axis_values(section: str, key: str, values: list[Any] | dict[str, Any]) -> list[tuple[str, str | None, Any]]:
    """(where, label or None, value) of one axis."""
    if isinstance(values, dict):
        return [(f"{section}.{key}.{label}", str(label), v) for label, v in values.items()]
    return [(f"{section}.{key}[{i}]", None, v) for i, v in enumerate(values)]


def expand_points(sweep: SweepConfig) -> list[Point]:
    """Every point of ``grid`` x ``zip`` in order (first grid axis slowest, the zip last); one point without axes."""
    axes: list[list[AxisValue]] = []
    for key, values in sweep.grid.items():
        axes.append([AxisValue(where, {key: v}, label if label is not None else show_value(v), {key: show_value(v)})
                     for where, label, v in _axis_values("grid", key, values)])
    if sweep.zip:
        columns = {key: _axis_values("zip", key, values) for key, values in sweep.zip.items()}
        steps = []
        for i in range(len(next(iter(columns.values())))):
            row = {key: col[i] for key, col in columns.items()}
            labels = [lab for _, lab, _ in row.values() if lab is not None]
            values = {key: v for key, (_, _, v) in row.items()}
            shown = {key: show_value(v) for key, v in values.items()}
            where = ", ".join(w for w, _, _ in row.values())
            steps.append(AxisValue(where, values, labels[0] if labels else ", ".join(shown.values()), shown))
        axes.append(steps)
    points = []
    for i, combo in enumerate(itertools.product(*axes)):
        label = " / ".join(c.label for c in combo) if combo else "base"
        points.append(Point(i, label, tuple(combo)))
    return points


def _override_text(key: str, value: Any) -> str:
    return f"{key}={yaml.safe_dump(value, default_flow_style=True, width=1 << 20)}"


def resolve_tree(base: Mapping[str, Any], updates: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with each dotted ``key: value`` merged in order, by the config loader's rules (a value with another
    ``type`` replaces the whole component mapping)."""
    return apply_overrides(dict(base), [_override_text(k, v) for k, v in updates.items()])


__all__ = ["AxisValue", "Point", "expand_points", "resolve_tree", "show_value", "slug"]
