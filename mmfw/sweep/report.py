"""The results of a study, rebuilt from its run directories alone: ``results.csv``, ``results.md`` and plots.

* ``results.csv``: one row per run: point, label, the axis values (readable), seed, fingerprint, status, error, every
  metric of the run's ``metrics.json`` (``eval.accuracy``, ``eval.accuracy/<task>``, ``eval.loss``, ...), the final
  training loss, total and trainable parameters, image tokens per image, tokens/s (mean over the logged windows),
  wall time and peak memory (resident set of the training process) of the job that finished the run;
* ``results.md``: one row per point: mean ± sample standard deviation over its finished seeds, the best point in
  bold, and which differences exceed the seed noise (the rule of :mod:`mmfw.sweep.results`);
* ``plots/metric_by_axis.png`` (:mod:`mmfw.sweep.plots`) (the main metric per axis value, error bars over runs), ``plots/loss_curves.png``
  (every run's training loss), ``plots/per_task.png`` (per-task accuracy per point).
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmfw.sweep.plots import write_plots
from mmfw.sweep.results import (
    TIMING_COLUMNS,
    PointStats,
    RunRow,
    beyond_noise,
    collect,
    comparisons,
    flat_metrics,
    mean_std,
    metric_keys,
    points_of,
)


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.{digits}g}" if abs(v) >= 1000 else f"{round(v, digits)}"
    return str(v)


def write_csv(rows: Sequence[RunRow], path: Path) -> list[str]:
    axes = list(dict.fromkeys(k for r in rows for k in r.info.get("axis_keys", [])))
    keys = metric_keys(rows)
    header = ["point", "label", *axes, "seed", "fingerprint", "status", *keys, "params_total",
              "params_trainable", "image_tokens", *TIMING_COLUMNS, "error"]
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            shown = r.info.get("axes", {})
            w.writerow([r.point, r.label, *(shown.get(a, "") for a in axes), r.info["seed"], r.info["fingerprint"],
                        r.status, *(_fmt(r.metrics.get(k), 6) for k in keys),
                        *(_fmt(r.extra.get(k), 6) for k in ("params_total", "params_trainable",
                                                            "image_tokens", *TIMING_COLUMNS)),
                        r.extra.get("error") or ""])
    return header


def _pm(values: Sequence[float], digits: int = 3) -> str:
    m, s = mean_std(values)
    if m is None:
        return "-"
    return f"{m:.{digits}f}" + (f" ± {s:.{digits}f}" if s is not None else "")


def write_markdown(rows: Sequence[RunRow], path: Path, title: str) -> None:
    if not rows:
        path.write_text(f"# {title}\n\nNo runs.\n", encoding="utf-8")
        return
    info = rows[0].info
    metric, higher = info.get("metric", "eval.accuracy"), bool(info.get("higher_is_better", True))
    points = points_of(rows)
    tasks = sorted(k for k in metric_keys(rows) if k.startswith(metric + "/"))
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


def write_report(study_dir: str | Path) -> dict[str, Any]:
    """Write ``results.csv``, ``results.md`` and the plots of a study; returns what was written and the counts."""
    study_dir = Path(study_dir)
    rows = collect(study_dir)
    write_csv(rows, study_dir / "results.csv")
    write_markdown(rows, study_dir / "results.md", f"Study `{study_dir.name}`")
    plots = write_plots(rows, study_dir / "plots")
    return {"runs": len(rows), "statuses": dict(_counts(r.status for r in rows)),
            "files": [str(study_dir / "results.csv"), str(study_dir / "results.md"), *map(str, plots)]}


__all__ = ["TIMING_COLUMNS", "PointStats", "RunRow", "beyond_noise", "collect", "comparisons", "flat_metrics",
           "mean_std", "write_csv", "write_markdown", "write_plots", "write_report"]
