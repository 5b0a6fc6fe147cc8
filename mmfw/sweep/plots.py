"""The figures of a study (``plots/``): the main metric per axis value, every run's training loss, per-task
accuracy per point. matplotlib is imported here only, when a report is written."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmfw.sweep.results import RunRow, mean_std, metric_keys, points_of


def write_plots(rows: Sequence[RunRow], out_dir: Path) -> list[Path]:
    """``metric_by_axis.png``, ``loss_curves.png`` and ``per_task.png`` (those that have data); returns their
    paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    done = [r for r in rows if r.status == "done"]
    if not done:
        return []
    colors = {p.point: plt.cm.tab10(i % 10) for i, p in enumerate(points_of(rows))}
    written = [_save(_metric_by_axis(plt, rows, done), out_dir / "metric_by_axis.png"),
               _save(_loss_curves(plt, rows, colors), out_dir / "loss_curves.png")]
    fig = _per_task(plt, rows, colors)
    if fig is not None:
        written.append(_save(fig, out_dir / "per_task.png"))
    return written


def _metric_by_axis(plt: Any, rows: Sequence[RunRow], done: Sequence[RunRow]) -> Any:
    info = rows[0].info
    metric = info.get("metric", "eval.accuracy")
    axes = list(info.get("axis_keys", [])) or ["point"]
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
        long = max(map(len, labels)) > 10
        ax.set_xticks(range(len(names)), labels, rotation=20 if long else 0, ha="right" if long else "center",
                      fontsize=8)
        ax.set_title(key, fontsize=9)
        ax.set_ylabel(metric)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"{metric}: mean ± std over runs (dots: runs)", fontsize=10)
    fig.tight_layout()
    return fig


def _loss_curves(plt: Any, rows: Sequence[RunRow], colors: dict[int, Any]) -> Any:
    fig, ax = plt.subplots(figsize=(7, 4))
    styles = ["-", "--", ":", "-."]
    seeds = sorted({r.info["seed"] for r in rows})
    for p in points_of(rows):
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
    return fig


def _per_task(plt: Any, rows: Sequence[RunRow], colors: dict[int, Any]) -> Any | None:
    tasks = sorted(k for k in metric_keys(rows) if k.startswith("eval.accuracy/"))
    if not tasks:
        return None
    points = points_of(rows)
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
    return fig


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
