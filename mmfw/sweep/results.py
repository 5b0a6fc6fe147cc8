"""A study's runs read back from their directories (:func:`collect`), grouped by point, and the seed-noise rule:
two points differ when the gap of their means is more than twice its standard error (``sqrt(s1²/n1 + s2²/n2)``)
and their seeds' ranges do not overlap."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmfw.executors.runs import FINAL_METRICS, METRICS_LOG, OUTCOME, read_json, run_status, study_runs

NOT_REPORTED = ("train.lr", "train.tokens_per_s", "train.token_efficiency")
"""Keys of ``metrics.json`` left out: the last window's learning rate and speed (``tokens_per_s`` is the mean of
every window)."""
TIMING_COLUMNS = ("tokens_per_s", "wall_s", "peak_rss_mb")
"""Columns that depend on the machine and its load (everything else is a function of the configs on CPU)."""


@dataclass
class RunRow:
    run_dir: Path
    info: dict[str, Any]
    status: str
    metrics: dict[str, float] = field(default_factory=dict)
    curve: list[tuple[int, float]] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def point(self) -> int:
        return int(self.info["point"])

    @property
    def label(self) -> str:
        return str(self.info["label"])


def flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """``metrics.json`` as flat ``group.name`` keys (``eval.accuracy``, ``eval.accuracy/count``, ``train.loss``)."""
    out = {}
    for group, values in metrics.items():
        if isinstance(values, dict) and group != "stages":
            out.update({f"{group}.{k}": float(v) for k, v in values.items() if isinstance(v, int | float)})
    return out


def _curve_and_speed(log: Path) -> tuple[list[tuple[int, float]], float | None]:
    import json

    losses: dict[tuple[str, int], float] = {}
    speeds: dict[tuple[str, int], float] = {}
    try:
        lines = log.read_text(encoding="utf-8").splitlines()
    except OSError:
        return [], None
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        key = (str(rec.get("stage", "")), int(rec.get("step", 0)))  # a resumed run logs some steps again: last wins
        if "train/loss" in rec:
            losses[key] = float(rec["train/loss"])
        if "train/tokens_per_s" in rec:
            speeds[key] = float(rec["train/tokens_per_s"])
    # stages follow each other: their steps restart, so shift each by the steps of the stages before it
    shift, curve = 0, []
    for stage in dict.fromkeys(s for s, _ in losses):
        steps = sorted(st for s, st in losses if s == stage)
        curve += [(shift + st, losses[(stage, st)]) for st in steps]
        shift += steps[-1] if steps else 0
    speed = sum(speeds.values()) / len(speeds) if speeds else None
    return curve, speed


def collect(study_dir: str | Path) -> list[RunRow]:
    """Every run of the study with its status, metrics, loss curve and costs (read from the run directories)."""
    rows = []
    for run_dir, info in study_runs(Path(study_dir)):
        row = RunRow(run_dir, info, run_status(run_dir))
        metrics = read_json(run_dir / FINAL_METRICS)
        if isinstance(metrics, dict):
            row.metrics = flat_metrics(metrics)
        row.curve, speed = _curve_and_speed(run_dir / METRICS_LOG)
        outcome = read_json(run_dir / OUTCOME) or {}
        model = info.get("model") or {}
        row.extra = {"params_total": model.get("params_total"), "params_trainable": model.get("params_trainable"),
                     "image_tokens": model.get("image_tokens"), "tokens_per_s": speed,
                     "wall_s": outcome.get("wall_s"), "peak_rss_mb": outcome.get("peak_rss_mb"),
                     "error": outcome.get("error") if row.status == "failed" else None}
        rows.append(row)
    return rows


def metric_keys(rows: Sequence[RunRow]) -> list[str]:
    keys = {k for r in rows for k in r.metrics if k not in NOT_REPORTED}
    evals = sorted(k for k in keys if k.startswith("eval."))
    return evals + sorted(k for k in keys if not k.startswith("eval."))


@dataclass
class PointStats:
    point: int
    label: str
    axes: dict[str, str]
    runs: list[RunRow]

    @property
    def done(self) -> list[RunRow]:
        return [r for r in self.runs if r.status == "done"]

    def values(self, key: str) -> list[float]:
        out = []
        for r in self.done:
            v = r.metrics.get(key, r.extra.get(key))
            if isinstance(v, int | float) and v is not None and not math.isnan(v):
                out.append(float(v))
        return out


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    m = sum(values) / len(values)
    if len(values) < 2:
        return m, None
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def points_of(rows: Sequence[RunRow]) -> list[PointStats]:
    by: dict[int, PointStats] = {}
    for r in rows:
        by.setdefault(r.point, PointStats(r.point, r.label, r.info.get("axes", {}), [])).runs.append(r)
    return [by[k] for k in sorted(by)]


def beyond_noise(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two sets of seed results differ by more than the seed noise (see the module docstring)."""
    if len(a) < 2 or len(b) < 2:
        return False
    (ma, sa), (mb, sb) = mean_std(a), mean_std(b)
    se = math.sqrt(sa**2 / len(a) + sb**2 / len(b))
    apart = min(a) > max(b) or min(b) > max(a)
    return apart and abs(ma - mb) > 2 * se


def comparisons(points: Sequence[PointStats], metric: str, higher: bool) -> tuple[list[str], list[str]]:
    """(pairs that differ beyond seed noise, pairs that do not), better point first."""
    differ, tie = [], []
    ranked = sorted((p for p in points if p.values(metric)), key=lambda p: mean_std(p.values(metric))[0],
                    reverse=higher)
    for i, a in enumerate(ranked):
        for b in ranked[i + 1:]:
            va, vb = a.values(metric), b.values(metric)
            gap = mean_std(va)[0] - mean_std(vb)[0]
            text = f"{a.label} vs {b.label} ({gap:+.3f})"
            (differ if beyond_noise(va, vb) else tie).append(text)
    return differ, tie
