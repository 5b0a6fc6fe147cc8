"""``mmfw plot RUN_DIR``: redraw a run's pictures, ``plots/loss.png`` and ``plots/eval_samples.png``."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmfw.cli.common import CLIError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="draw a run's loss curve and eval samples into RUN_DIR/plots")
    p.add_argument("run_dir", help="run directory (with metrics.jsonl; predictions.jsonl for the samples)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmfw.training.plots import draw_run_plots

    run_dir = Path(args.run_dir)
    if not (run_dir / "metrics.jsonl").exists():
        raise CLIError(f"{run_dir}: no metrics.jsonl here; pass a run directory (e.g. runs/quickstart)")
    for path in draw_run_plots(run_dir):
        print(path)
    return 0
