"""From a sweep file to runs: resolve each point's experiment config, fingerprint it, and validate every point the
way ``mmfw train`` validates a config, before anything runs (:mod:`mmfw.sweep.points` expands the axes).

A run's fingerprint is a hash of its fully resolved config (the pydantic dump, as canonical JSON with sorted keys),
without ``output_dir`` and ``name``: it does not depend on the order of keys in the files or on how a value was
written (``1e-3`` or ``0.001``, ``full`` or ``{type: full}``). Each run lives in ``STUDY/runs/<label>-s<seed>-<fp>``;
a run is found again by its fingerprint, so relabelling a point does not train it again, and a point whose runs are
all done is not validated again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmfw.config import ConfigError, ExperimentConfig, load_config_dict
from mmfw.config.loader import load_yaml_tree
from mmfw.executors.runs import FINAL_METRICS, RUNS_DIR
from mmfw.sweep.points import AxisValue, Point, expand_points, resolve_tree, show_value, slug
from mmfw.sweep.spec import SweepConfig, default_output_dir, load_sweep

if TYPE_CHECKING:
    from mmfw.components import Registries

FINGERPRINT_LENGTH = 12
_EXCLUDED_FROM_FINGERPRINT = ("output_dir", "name")


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


def _base_tree(path: Path, sweep: SweepConfig) -> dict[str, Any]:
    base_path = path.parent / sweep.base
    if not base_path.is_file():
        raise ConfigError([f"base: file not found: {base_path}"], source=str(path))
    try:
        return resolve_tree(load_yaml_tree(base_path), sweep.set)
    except ConfigError as e:
        raise ConfigError([f"base ({base_path}): {p}" for p in e.problems], source=str(path)) from None


def plan_study(path: str | Path, registries: Registries, output_dir: str | Path | None = None,
               validate: bool = True) -> StudyPlan:
    """Expand the sweep file ``path`` into runs; with ``validate``, check every point as ``mmfw train`` does.

    A point whose runs are all done (found by fingerprint, with their ``metrics.json``) is not validated again: its
    config is the one that trained. Raises one :class:`ConfigError` listing every problem of every point
    (``point 3 (resampler): yaml.path: ...``).
    """
    path = Path(path)
    sweep = load_sweep(path)
    study_dir = Path(output_dir or sweep.output_dir or default_output_dir(path))
    base = _base_tree(path, sweep)
    points = expand_points(sweep)
    plan = StudyPlan(sweep, path, study_dir, [*sweep.grid, *sweep.zip], points)
    problems: list[str] = []
    unknown = sorted(set(sweep.optional) - {p.label for p in points})
    if unknown:
        problems.append(f"optional: {unknown} are not point labels ({[p.label for p in points]})")
    seen: dict[str, str] = {}
    existing = _existing_runs(study_dir / RUNS_DIR)
    for point in points:
        runs, found = _point_runs(point, resolve_tree(base, point.overrides), plan, registries, seen, existing)
        if validate and not found and runs and not all(_done(r.run_dir) for r in runs):
            found = _validate(runs[0], registries)  # the seed changes nothing that validation looks at
        prefix = f"point {point.index} ({point.label})"
        found = _located(prefix, found, point, sweep)
        if found and point.label in sweep.optional:
            plan.skipped.append((point, found[0].removeprefix(prefix + ": ")))
        elif found:
            problems.extend(found)
        else:
            plan.runs.extend(runs)
    problems.extend(shared_data_conflicts(plan.runs))
    if problems:
        raise ConfigError(problems, source=str(path))
    return plan


def _point_runs(point: Point, tree: dict[str, Any], plan: StudyPlan, registries: Registries, seen: dict[str, str],
                existing: dict[str, Path]) -> tuple[list[Run], list[str]]:
    """The runs of one point, one per seed, and the problems of their configs (unlocated)."""
    runs: list[Run] = []
    for seed in plan.sweep.seeds:
        run_tree = {**tree, "seed": seed, "output_dir": "__pending__",
                    "name": f"{tree.get('name', 'experiment')}-{slug(point.label)}-s{seed}"}
        try:
            cfg = load_config_dict(run_tree, registries)
        except ConfigError as e:
            return runs, list(e.problems)
        fp = fingerprint(cfg)
        if fp in seen:
            return runs, [f"seed {seed}: resolves to the same config as {seen[fp]}"]
        seen[fp] = f"point {point.index} ({point.label}), seed {seed}"
        run_dir = existing.get(fp) or plan.study_dir / RUNS_DIR / f"{slug(point.label)}-s{seed}-{fp}"
        runs.append(Run(point, seed, cfg.model_copy(update={"output_dir": str(run_dir)}), fp, run_dir))
    return runs, []


def _validate(run: Run, registries: Registries) -> list[str]:
    from mmfw.training.validate import validate_experiment  # torch and transformers: only when a point is checked

    return list(validate_experiment(run.config, registries))


def _done(run_dir: Path) -> bool:
    return (run_dir / FINAL_METRICS).is_file()


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
