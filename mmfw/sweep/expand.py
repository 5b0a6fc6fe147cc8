"""From a sweep file to runs: expand the axes into points, resolve each point's experiment config, fingerprint it,
and validate every point the way ``mmfw train`` validates a config, before anything runs.

A run's fingerprint is a hash of its fully resolved config (the pydantic dump, as canonical JSON with sorted keys),
without ``output_dir`` and ``name``: it does not depend on the order of keys in the files or on how a value was
written (``1e-3`` or ``0.001``, ``full`` or ``{type: full}``). Each run lives in ``STUDY/runs/<label>-s<seed>-<fp>``;
a run is found again by its fingerprint, so relabelling a point does not train it again.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from mmfw.config import ConfigError, ExperimentConfig, load_config_dict
from mmfw.config.loader import apply_overrides, load_yaml_tree
from mmfw.executors.runs import RUNS_DIR
from mmfw.sweep.spec import SweepConfig, default_output_dir, load_sweep

if TYPE_CHECKING:
    from mmfw.components import Registries

FINGERPRINT_LENGTH = 12
_EXCLUDED_FROM_FINGERPRINT = ("output_dir", "name")


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


@dataclass(frozen=True)
class Run:
    """One point trained with one seed."""

    point: Point
    seed: int
    config: ExperimentConfig
    fingerprint: str
    run_dir: Path

    @property
    def name(self) -> str:
        return self.run_dir.name


@dataclass
class StudyPlan:
    """Everything a sweep file expands to."""

    sweep: SweepConfig
    source: Path
    study_dir: Path
    axes: list[str]
    points: list[Point]
    runs: list[Run] = field(default_factory=list)
    skipped: list[tuple[Point, str]] = field(default_factory=list)
    """Optional points left out, with their first problem."""


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


def fingerprint(cfg: ExperimentConfig) -> str:
    """Hash of the fully resolved config (see module docstring)."""
    data = cfg.model_dump(mode="json")
    for key in _EXCLUDED_FROM_FINGERPRINT:
        data.pop(key, None)
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:FINGERPRINT_LENGTH]


def _origin(problem: str, point: Point, sweep: SweepConfig) -> str:
    """The sweep-file entry a problem at a config path comes from (an axis value or ``set``), if any."""
    where = problem.split(":", 1)[0].strip()
    for choice in point.choices:
        for key in choice.values:
            if where == key or where.startswith(key + ".") or where.startswith(key + "["):
                return choice.where
    for key in sweep.set:
        if where == key or where.startswith(key + ".") or where.startswith(key + "["):
            return f"set.{key}"
    return ""


def plan_study(path: str | Path, registries: Registries, output_dir: str | Path | None = None,
               validate: bool = True) -> StudyPlan:
    """Expand the sweep file ``path`` into runs; with ``validate``, check every point as ``mmfw train`` does.

    Raises one :class:`ConfigError` listing every problem of every point (``point 3 (resampler): yaml.path: ...``).
    """
    from mmfw.training.validate import validate_experiment

    path = Path(path)
    sweep = load_sweep(path)
    study_dir = Path(output_dir or sweep.output_dir or default_output_dir(path))
    base_path = path.parent / sweep.base
    if not base_path.is_file():
        raise ConfigError([f"base: file not found: {base_path}"], source=str(path))
    try:
        base = resolve_tree(load_yaml_tree(base_path), sweep.set)
    except ConfigError as e:
        raise ConfigError([f"base ({base_path}): {p}" for p in e.problems], source=str(path)) from None
    points = expand_points(sweep)
    plan = StudyPlan(sweep, path, study_dir, [*sweep.grid, *sweep.zip], points)
    problems: list[str] = []
    seen: dict[str, str] = {}
    existing = _existing_runs(study_dir / RUNS_DIR)
    unknown = sorted(set(sweep.optional) - {p.label for p in points})
    if unknown:
        problems.append(f"optional: {unknown} are not point labels ({[p.label for p in points]})")
    for point in points:
        tree = resolve_tree(base, point.overrides)
        prefix = f"point {point.index} ({point.label})"
        found_before = len(problems)
        runs_before = len(plan.runs)
        for j, seed in enumerate(sweep.seeds):
            run_tree = {**tree, "seed": seed, "output_dir": "__pending__",
                        "name": f"{tree.get('name', 'experiment')}-{slug(point.label)}-s{seed}"}
            try:
                cfg = load_config_dict(run_tree, registries)
            except ConfigError as e:
                problems.extend(_located(prefix, e.problems, point, sweep))
                break
            fp = fingerprint(cfg)
            if fp in seen:
                problems.append(f"{prefix}, seed {seed}: resolves to the same config as {seen[fp]}")
                continue
            seen[fp] = f"point {point.index} ({point.label}), seed {seed}"
            run_dir = existing.get(fp) or study_dir / RUNS_DIR / f"{slug(point.label)}-s{seed}-{fp}"
            cfg = cfg.model_copy(update={"output_dir": str(run_dir)})
            if validate and j == 0:  # the seed changes nothing that validation looks at
                found = validate_experiment(cfg, registries)
                if found:
                    problems.extend(_located(prefix, found, point, sweep))
                    break
            plan.runs.append(Run(point, seed, cfg, fp, run_dir))
        if point.label in sweep.optional and len(problems) > found_before:
            plan.skipped.append((point, problems[found_before].removeprefix(prefix + ": ")))
            del problems[found_before:]
            del plan.runs[runs_before:]
    problems.extend(shared_data_conflicts(plan.runs))
    if problems:
        raise ConfigError(problems, source=str(path))
    return plan


def _located(prefix: str, problems: Sequence[str], point: Point, sweep: SweepConfig) -> list[str]:
    out = []
    for p in problems:
        origin = _origin(p, point, sweep)
        out.append(f"{prefix}: {p}" + (f" (from {origin})" if origin else ""))
    return out


def _existing_runs(runs_dir: Path) -> dict[str, Path]:
    """Fingerprint -> run directory of the runs already in a study."""
    out: dict[str, Path] = {}
    if runs_dir.is_dir():
        for d in sorted(runs_dir.iterdir()):
            fp = d.name.rsplit("-", 1)[-1]
            if d.is_dir() and len(fp) == FINGERPRINT_LENGTH:
                out.setdefault(fp, d)
    return out


def shared_data_conflicts(runs: Sequence[Run]) -> list[str]:
    """Runs that would generate different data (or tokenizers) into the same directory."""
    problems: list[str] = []
    owners: dict[str, tuple[str, str]] = {}
    for run in runs:
        for stage in run.config.stage_plan():
            d = stage.data
            specs = []
            if d.synthetic is not None:
                specs.append(("data.synthetic", d.synthetic.out_dir, d.synthetic.model_dump_json()))
            if d.build_tokenizer is not None:
                trained_on = json.dumps([s.path for s in d.train])
                specs.append(("data.build_tokenizer", d.build_tokenizer.out_dir,
                              d.build_tokenizer.model_dump_json() + trained_on))
            for what, out_dir, key in specs:
                where = str(Path(out_dir).resolve())
                who = f"point {run.point.index} ({run.point.label})"
                if where in owners and owners[where][0] != key:
                    msg = (f"{who}: {what}.out_dir {out_dir} is written with other settings by {owners[where][1]}; "
                           "give each variant its own out_dir")
                    if msg not in problems:
                        problems.append(msg)
                owners.setdefault(where, (key, who))
    return problems


__all__ = ["AxisValue", "Point", "Run", "StudyPlan", "expand_points", "fingerprint", "plan_study", "resolve_tree",
           "show_value", "slug"]
