"""Pictures of a run: ``plots/loss.png`` (train and eval loss, eval accuracy per step, from ``metrics.jsonl``) and
``plots/eval_samples.png`` (eval images with question, reference and prediction, from ``predictions.jsonl``).

The trainer draws both at the end of every run; ``mmfw plot RUN`` redraws them. matplotlib (Agg backend, no display)
is imported only when a picture is drawn.
"""

from __future__ import annotations

import json
import logging
import math
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PLOTS_DIR = "plots"
LOSS_PLOT = "loss.png"
SAMPLES_PLOT = "eval_samples.png"
_METRICS_LOG = "metrics.jsonl"
_PREDICTIONS = "predictions.jsonl"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def read_metrics_log(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl``; a line that does not parse (a run killed mid-write) is skipped."""
    records = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def run_steps(records: Sequence[dict[str, Any]]) -> tuple[list[int], list[tuple[int, str]]]:
    """A run-wide step for each record (stages continue where the previous stage ended) and the first step of
    each stage as ``(step, name)`` (empty for a run without stages)."""
    steps: list[int] = []
    starts: list[tuple[int, str]] = []
    offset, last, stage = 0, 0, None
    for r in records:
        name = r.get("stage")
        if name != stage:
            offset += last if stage is not None else 0
            stage, last = name, 0
            if name is not None:
                starts.append((offset, name))
        last = max(last, int(r.get("step", 0)))
        steps.append(offset + int(r.get("step", 0)))
    return steps, starts


def _series(records: Sequence[dict[str, Any]], steps: Sequence[int], key: str) -> tuple[list[int], list[float]]:
    pairs = [(s, float(r[key])) for s, r in zip(steps, records, strict=True)
             if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
    return [p[0] for p in pairs], [p[1] for p in pairs]


def plot_loss(records: Sequence[dict[str, Any]], out: str | Path, title: str = "") -> Path:
    """Train loss and eval loss (left axis, log scale) and eval accuracy (right axis) against the step."""
    plt = _pyplot()
    steps, starts = run_steps(records)
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    try:
        drawn = False
        for key, style, label in (("train/loss", "-", "train loss"), ("eval/loss", "o-", "eval loss")):
            xs, ys = _series(records, steps, key)
            if xs:
                ax.plot(xs, ys, style, label=label, color="C0" if key == "train/loss" else "C1", markersize=4)
                drawn = True
        if drawn:
            from matplotlib.ticker import FuncFormatter

            ax.set_yscale("log")
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(FuncFormatter(_minor_label))
        ax.set_xlabel("step")
        ax.set_ylabel("loss (per supervised token)")
        ax.grid(True, alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        xs, ys = _series(records, steps, "eval/accuracy")
        if xs:
            ax2 = ax.twinx()
            ax2.plot(xs, ys, "s--", color="C2", label="eval accuracy", markersize=5)
            for x, y in zip(xs, ys, strict=True):
                ax2.annotate(f"{y:.3f}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center",
                             fontsize=8, color="C2")
            ax2.set_ylim(0, 1.05)
            ax2.set_ylabel("eval accuracy (exact match)")
            h2, l2 = ax2.get_legend_handles_labels()
            handles, labels = handles + h2, labels + l2
        for x, name in starts:
            ax.axvline(x, color="grey", linestyle=":", linewidth=1)
            ax.annotate(name, (x, 1), xycoords=("data", "axes fraction"), xytext=(3, -12),
                        textcoords="offset points", fontsize=8, color="grey")
        if handles:
            ax.legend(handles, labels, loc="center right", fontsize=9)
        if not drawn and not xs:
            ax.text(0.5, 0.5, "no losses logged yet", transform=ax.transAxes, ha="center", va="center")
        ax.set_title(title or "training")
        fig.tight_layout()
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out


def choose_samples(predictions: Sequence[dict[str, Any]], n: int = 16) -> list[dict[str, Any]]:
    """Up to ``n`` predictions in file order: the wrong ones first (at most half of ``n``), then correct ones."""
    all_wrong = [i for i, p in enumerate(predictions) if not p.get("correct")]
    right = [i for i, p in enumerate(predictions) if p.get("correct")][: n - len(all_wrong[: n // 2])]
    wrong = all_wrong[: n - len(right)]
    return [predictions[i] for i in sorted(wrong + right)]


def plot_eval_samples(predictions: Sequence[dict[str, Any]], out: str | Path, n: int = 16, columns: int = 4,
                      title: str = "") -> Path | None:
    """A grid of eval images, each with its question, the reference answer and the prediction; wrong answers are
    framed and written in red. Returns ``None`` (and draws nothing) when no prediction has a readable image."""
    from PIL import Image

    chosen = []
    for p in choose_samples([p for p in predictions if p.get("images")], n):
        path = Path(p["images"][0])
        if path.exists():
            with Image.open(path) as im:
                chosen.append((p, im.convert("RGB")))
    if not chosen:
        return None
    plt = _pyplot()
    rows = math.ceil(len(chosen) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 3.2 * rows), dpi=100, squeeze=False)
    try:
        for ax in axes.flat:
            ax.axis("off")
        for ax, (p, image) in zip(axes.flat, chosen, strict=False):
            ok = bool(p.get("correct"))
            color = "#1a7f37" if ok else "#cf222e"
            ax.imshow(image, interpolation="nearest")
            ax.axis("on")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color(color)
                spine.set_linewidth(1 if ok else 4)
            lines = textwrap.wrap(" ".join(str(p.get("question", "")).split()), 32) or [""]
            question = "\n".join(lines[:2]) + ("…" if len(lines) > 2 else "")
            ax.set_title(question, fontsize=8)
            mark = "right" if ok else "WRONG"
            ax.set_xlabel(f"answer: {_short(p.get('reference', ''), 16)}\npredicted: "
                          f"{_short(p.get('prediction', ''), 16) or '(nothing)'} ({mark})", fontsize=8, color=color)
        n_wrong = sum(1 for p in predictions if not p.get("correct"))
        fig.suptitle(title or f"eval samples ({len(chosen)} of {len(predictions)}; {n_wrong} wrong in all, "
                              "wrong ones framed in red)", fontsize=10)
        fig.tight_layout(h_pad=1.2)
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out


def _minor_label(value: float, _: int) -> str:
    """Labels for the minor ticks of a log axis: 2x and 5x a power of ten only (the others stay unlabelled)."""
    mantissa = value / 10 ** math.floor(math.log10(value)) if value > 0 else 0
    return f"{value:g}" if round(mantissa) in (2, 5) and abs(mantissa - round(mantissa)) < 1e-6 else ""


def _short(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def draw_run_plots(run_dir: str | Path) -> list[Path]:
    """Draw ``plots/loss.png`` from the run's ``metrics.jsonl`` and, when its ``predictions.jsonl`` has images,
    ``plots/eval_samples.png``; returns the files written. Raises ``FileNotFoundError`` without ``metrics.jsonl``."""
    run_dir = Path(run_dir)
    log = run_dir / _METRICS_LOG
    if not log.exists():
        raise FileNotFoundError(f"{run_dir}: no {_METRICS_LOG} (not a run directory, or the run has not started)")
    out_dir = run_dir / PLOTS_DIR
    written = [plot_loss(read_metrics_log(log), out_dir / LOSS_PLOT, title=f"{run_dir.name}: loss and accuracy")]
    predictions_file = run_dir / _PREDICTIONS
    if predictions_file.exists():
        from mmfw.training.evaluate import read_predictions

        samples = plot_eval_samples(read_predictions(predictions_file), out_dir / SAMPLES_PLOT)
        if samples is not None:
            written.append(samples)
    return written


def draw_run_plots_quietly(run_dir: str | Path) -> list[Path]:
    """:func:`draw_run_plots` for the end of training: a picture that cannot be drawn is a warning, not a failed
    run (the model and metrics are already saved)."""
    try:
        return draw_run_plots(run_dir)
    except Exception as e:  # noqa: BLE001 - matplotlib or image errors must not fail a finished run
        logger.warning("could not draw the run's plots (%s: %s); `mmfw plot %s` tries again", type(e).__name__, e,
                       run_dir)
        return []
