"""``mmfw eval RUN_DIR --tasks TASK [...]``: score a run with the lmms-eval harness (``pip install -e ".[eval]"``).

``mmfw_synth`` (shipped in ``mmfw/eval/tasks/``) scores the synthetic eval set exactly as ``mmfw train`` does;
any lmms-eval task, or a task of your own under ``--include-path DIR``, works the same way. Prints one line per
task metric and writes the results to ``RUN_DIR/lmms_eval.json`` (``--output`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mmfw.cli.common import CLIError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluate a run with lmms-eval tasks (needs the eval extra)")
    p.add_argument("run_dir", help="run directory, checkpoint directory or model directory")
    p.add_argument("--tasks", nargs="+", required=True, metavar="TASK",
                   help="lmms-eval task names, e.g. mmfw_synth (comma-separated lists work too)")
    p.add_argument("--include-path", action="append", default=[], metavar="DIR",
                   help="a folder of lmms-eval task YAMLs (repeatable)")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N documents of each task")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cpu")
    p.add_argument("--output", help="results JSON (default: RUN_DIR/lmms_eval.json)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmfw.eval.harness import EvalError, run_lmms_eval, summary

    run_dir = Path(args.run_dir)
    if not run_dir.is_dir():
        raise CLIError(f"{run_dir}: not a directory (pass a run directory, e.g. runs/quickstart)")
    if args.limit is not None and args.limit < 1:
        raise CLIError("--limit must be at least 1")
    tasks = [t for item in args.tasks for t in item.split(",") if t]
    try:
        results = summary(run_lmms_eval(run_dir, tasks, args.include_path, args.limit, args.batch_size,
                                        args.device))
    except EvalError as e:
        raise CLIError(str(e)) from None
    out = Path(args.output) if args.output else run_dir / "lmms_eval.json"
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    for task, metrics in results.get("results", {}).items():
        shown = {k.split(",")[0]: v for k, v in metrics.items() if isinstance(v, int | float) and "stderr" not in k}
        n = results.get("n-samples", {}).get(task, {}).get("effective")
        print(f"{task}: " + ", ".join(f"{k} {v:.4f}" for k, v in shown.items()) + (f" ({n} documents)" if n else ""))
    print(f"results: {out}")
    return 0
