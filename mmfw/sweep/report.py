"""The results of a study, rebuilt from its run directories alone: ``results.csv``, ``results.md`` and plots.

* ``results.csv``: one row per run: point, label, the axis values (readable), seed, fingerprint, status, error, every
  metric of the run's ``metrics.json`` (``eval.accuracy``, ``eval.accuracy/<task>``, ``eval.loss``, ...), the final
  training loss, total and trainable parameters, image tokens per image, tokens/s (mean over the logged windows),
  wall time and peak memory (resident set of the training process) of the job that finished the run;
* ``results.md``: one row per point: mean ± sample standard deviation over its finished seeds, the best point in
  bold, and which differences exceed the seed noise: two points differ when the gap of their means is more than
  twice its standard error (``sqrt(s1²/n1 + s2²/n2)``) and their seeds' ranges do not overlap;
* ``plots/metric_by_axis.png`` (the main metric per axis value, error bars over runs), ``plots/loss_curves.png``
  (every run's training loss), ``plots/per_task.png`` (per-task accuracy per point).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmfw.executors.runs import FINAL_METRICS, METRICS_LOG, OUTCOME, read_json, run_status, study_runs

_NOT_REPORTED = ("train.lr", "train.tokens_per_s", "train.token_efficiency")
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


def _metric_keys(rows: Sequence[RunRow]) -> list[str]:
    keys = {k for r in rows for k in r.metrics if k not in _NOT_REPORTED}
    evals = sorted(k for k in keys if k.startswith("eval."))
    return evals + sorted(k for k in keys if not k.startswith("eval."))


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) >= 1000 else f"{round(v, digits)}"
    return str(v)


def write_csv(rows: Sequence[RunRow], path: Path) -> list[str]:
    axes = list(dict.fromkeys(k for r in rows for k in r.info.get("axis_keys", [])))
    metric_keys = _metric_keys(rows)
    header = ["point", "label", *axes, "seed", "fingerprint", "status", *metric_keys, "params_total",
              "params_trainable", "image_tokens", *TIMING_COLUMNS, "error"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            shown = r.info.get("axes", {})
            w.writerow([r.point, r.label, *(shown.get(a, "") for a in axes), r.info["seed"], r.info["fingerprint"],
                        r.status, *(_fmt(r.metrics.get(k), 6) for k in metric_keys),
                        *(_fmt(r.extra.get(k), 6) for k in ("params_total", "params_trainable",
                                                            "image_tokens", *TIMING_COLUMNS)),
                        r.extra.get("error") or ""])
    return header


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


def _pm(values: Sequence[float], digits: int = 3) -> str:
    m, s = mean_std(values)
    if m is None:
        return "-"
    return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if s is not None else "")


def points_of(rows: Sequence[RunRow]) -> list[PointStats]:
    by: dict[int, PointStats] = {}
    for r in rows:
        by.setdefault(r.point, PointStats(r.point, r.label, r.info.get("axes", {}), [])).runs.append(r)
    return [by[k] for k in sorted(by)]


def beyond_noise(a: Sequence[float], b: Sequence[float]) -> bool:
    """Whether two sets of seed results differ by more than the seed noise (see module docstring)."""
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


def write_markdown(rows: Sequence[RunRow], path: Path, title: str) -> None:
    if not rows:
        path.write_text(f"# {title}\n\nNo runs.\n", encoding="utf-8")
        return
    info = rows[0].info
    metric, higher = info.get("metric", "eval.accuracy"), bool(info.get("higher_is_better", True))
    points = points_of(rows)
    tasks = sorted(k for k in _metric_keys(rows) if k.startswith(metric + "/"))
    best = None
    scored = [p for p in points if p.values(metric)]
    if scored:
        best = (max if higher else min)(scored, key=lambda p: mean_std(p.values(metric))[0]).point
    seeds = sorted({r.info["seed"] for r in rows})
    lines = [f"# {title}", "",
             f"Main metric `{metric}` ({'higher' if higher else 'lower'} is better), mean ± standard deviation over "
             f"seeds {seeds}; the best point in bold. {len(rows)} runs, "
             + ", ".join(f"{n} {s}" for s, n in _counts(r.status for r in rows)) + ".", ""]
    head = ["point", "runs", metric, *(t.removeprefix(metric + "/") for t in tasks), "train loss", "params",
            "trainable", "image tokens", "tokens/s", "wall (s)"]
    lines += ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for p in points:
        m = p.values(metric)
        extra = p.done[0].extra if p.done else p.runs[0].extra
        cells = [p.label, f"{len(p.done)}/{len(p.runs)}", _pm(m),
                 *(_pm(p.values(t), 2) for t in tasks), _pm(p.values("train.loss")),
                 _count(extra.get("params_total")), _count(extra.get("params_trainable")),
                 _fmt(extra.get("image_tokens")), _pm(p.values("tokens_per_s"), 0), _pm(p.values("wall_s"), 0)]
        if p.point == best:
            cells[0], cells[2] = f"**{cells[0]}**", f"**{cells[2]}**"
        lines.append("| " + " | ".join(cells) + " |")
    differ, tie = comparisons(points, metric, higher)
    lines += ["", f"`{metric}` beyond seed noise (the gap of the means exceeds twice its standard error and the seeds' "
              "ranges do not overlap): " + ("; ".join(differ) if differ else "none") + ".",
              "", "Within seed noise: " + ("; ".join(tie) if tie else "none") + "."]
    per_task = [f"{t.removeprefix(metric + '/')}: " + "; ".join(d) for t in tasks
                if (d := comparisons(points, t, higher)[0])]
    if per_task:
        lines += ["", "Per task, beyond seed noise: " + " | ".join(per_task) + "."]
    failed = [r for r in rows if r.status == "failed"]
    if failed:
        lines += ["", "Failed runs:", ""] + [f"- `{r.run_dir.name}`: {r.extra.get('error')}" for r in failed]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _count(n: Any) -> str:
    return f"{n:,}" if isinstance(n, int) else _fmt(n)


def _counts(statuses: Any) -> list[tuple[str, int]]:
    c: dict[str, int] = defaultdict(int)
    for s in statuses:
        c[s] += 1
    return sorted(c.items())


def write_plots(rows: Sequence[RunRow], out_dir: Path) -> list[Path]:
    """The three figures of the module docstring (those that have data); returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    done = [r for r in rows if r.status == "done"]
    if not done:
        return written
    info = rows[0].info
    metric = info.get("metric", "eval.accuracy")
    axes = list(info.get("axis_keys", [])) or ["point"]
    points = points_of(rows)
    colors = {p.point: plt.cm.tab10(i % 10) for i, p in enumerate(points)}

    fig, subs = plt.subplots(1, len(axes), figsize=(max(4.5, 3.2 * len(axes) + 1.5), 3.6), squeeze=False)
    for ax, key in zip(subs[0], axes, strict=True):
        groups: dict[str, list[float]] = {}
        for r in done:
            value = r.info.get("axes", {}).get(key, r.label) if key != "point" else r.label
            v = r.metrics.get(metric)
            if v is not None:
                groups.setdefault(value, []).append(v)
        names = list(groups)
        if not names:
            ax.set_visible(False)
            continue
        stats = [mean_std(groups[n]) for n in names]
        ax.bar(range(len(names)), [m for m, _ in stats], yerr=[s or 0 for _, s in stats], capsize=4,
               color=[plt.cm.tab10(i % 10) for i in range(len(names))], alpha=0.85)
        for i, n in enumerate(names):
            ax.scatter([i] * len(groups[n]), groups[n], color="black", s=10, zorder=3)
        labels = [_axis_label(key, n, rows) for n in names]
        ax.set_xticks(range(len(names)), labels, rotation=20 if max(map(len, labels)) > 10 else 0, ha="right"
                      if max(map(len, labels)) > 10 else "center", fontsize=8)
        ax.set_title(key, fontsize=9)
        ax.set_ylabel(metric)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{metric}: mean ± std over runs (dots: runs)", fontsize=10)
    fig.tight_layout()
    written.append(_save(fig, out_dir / "metric_by_axis.png"))

    fig, ax = plt.subplots(figsize=(7, 4))
    styles = ["-", "--", ":", "-."]
    seeds = sorted({r.info["seed"] for r in rows})
    for p in points:
        for r in p.runs:
            if r.curve:
                xs, ys = zip(*r.curve, strict=True)
                ax.plot(xs, ys, styles[seeds.index(r.info["seed"]) % len(styles)], color=colors[p.point],
                        label=f"{p.label} (seed {r.info['seed']})", linewidth=1.2)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    ax.set_title("training loss of every run (line style: seed)", fontsize=10)
    fig.tight_layout()
    written.append(_save(fig, out_dir / "loss_curves.png"))

    tasks = sorted(k for k in _metric_keys(rows) if k.startswith("eval.accuracy/"))
    if tasks:
        fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(tasks) + 2), 4))
        width = 0.8 / max(1, len(points))
        for i, p in enumerate(points):
            stats = [mean_std(p.values(t)) for t in tasks]
            xs = [j + (i - (len(points) - 1) / 2) * width for j in range(len(tasks))]
            ax.bar(xs, [m or 0 for m, _ in stats], width, yerr=[s or 0 for _, s in stats], capsize=3,
                   color=colors[p.point], label=p.label)
        ax.set_xticks(range(len(tasks)), [t.removeprefix("eval.accuracy/") for t in tasks])
        ax.set_ylabel("eval accuracy")
        ax.set_ylim(0, 1.05)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
        ax.set_title("per-task accuracy per point (mean ± std over seeds)", fontsize=10)
        fig.tight_layout()
        written.append(_save(fig, out_dir / "per_task.png"))
    return written


def _axis_label(key: str, shown: str, rows: Sequence[RunRow]) -> str:
    """The point label of a one-axis study (short, as the user wrote it), else the readable value."""
    if len(rows[0].info.get("axis_keys", [])) == 1:
        for r in rows:
            if r.info.get("axes", {}).get(key) == shown:
                return r.label
    return shown


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(study_dir: str | Path) -> dict[str, Any]:
    """Write ``results.csv``, ``results.md`` and the plots of a study; returns what was written and the counts."""
    study_dir = Path(study_dir)
    rows = collect(study_dir)
    write_csv(rows, study_dir / "results.csv")
    write_markdown(rows, study_dir / "results.md", f"Study `{study_dir.name}`")
    plots = write_plots(rows, study_dir / "plots")
    return {"runs": len(rows), "statuses": dict(_counts(r.status for r in rows)),
            "files": [str(study_dir / "results.csv"), str(study_dir / "results.md"), *map(str, plots)]}
