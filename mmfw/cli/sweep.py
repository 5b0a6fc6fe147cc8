"""``mmfw sweep SWEEP.yaml``: run an ablation study; ``mmfw sweep status DIR`` and ``mmfw sweep report DIR``.

Every point is expanded and validated before the first run; runs that are done are not trained again, interrupted
ones resume, failed ones are recorded (and retried by the next ``mmfw sweep``). See docs/ablations.md.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from typing import Any

from mmfw.cli.common import CLIError

SUBCOMMANDS = ("status", "report")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sweep", help="run an ablation study from a sweep file (or: sweep status|report DIR)",
                       description="Run every point of a sweep file once per seed, then write results.csv, "
                                   "results.md and plots into the study directory. `mmfw sweep status DIR` lists "
                                   "each run's state; `mmfw sweep report DIR` rebuilds the results from the run "
                                   "directories.")
    p.add_argument("target", help="sweep YAML file, or `status` / `report`")
    p.add_argument("study_dir", nargs="?", help="study directory (with status / report)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the points, fingerprints and parameter counts; train nothing")
    p.add_argument("--parallel", type=int, default=1, metavar="N", help="runs at once (default 1)")
    p.add_argument("--threads", type=int, metavar="T",
                   help="compute threads per run (default: the CPU cores divided by --parallel)")
    p.add_argument("--executor", metavar="NAME", help="local (default), slurm, ray, or one a plugin registers")
    p.add_argument("--fail-fast", action="store_true", help="start no further run after the first failure")
    p.add_argument("--output-dir", help="study directory (overrides the sweep file's output_dir)")
    p.set_defaults(func=run)


def _study_dir(args: argparse.Namespace) -> Path:
    if not args.study_dir:
        raise CLIError(f"mmfw sweep {args.target} needs the study directory: mmfw sweep {args.target} DIR")
    d = Path(args.study_dir)
    if not d.is_dir():
        raise CLIError(f"{d}: not a directory")
    return d


def status(study_dir: Path) -> int:
    from mmfw.executors.runs import study_runs

    runs = study_runs(study_dir)
    if not runs:
        raise CLIError(f"{study_dir}: no runs (not a study directory, or nothing was planned yet)")
    from mmfw.executors.runs import OUTCOME, read_json, run_status

    counts: dict[str, int] = {}
    for run_dir, info in runs:
        s = run_status(run_dir)
        counts[s] = counts.get(s, 0) + 1
        note = ""
        if s == "failed":
            note = "  " + str((read_json(run_dir / OUTCOME) or {}).get("error", ""))
        print(f"{s:<12} {info['label']:<28} seed {info['seed']:<3} {run_dir.name}{note}")
    print(", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return 0


def report(study_dir: Path) -> int:
    from mmfw.sweep.report import write_report

    out = write_report(study_dir)
    if not out["runs"]:
        raise CLIError(f"{study_dir}: no runs (not a study directory, or nothing was planned yet)")
    print((study_dir / "results.md").read_text(encoding="utf-8"))
    for f in out["files"]:
        print(f"wrote {f}")
    return 0


def _dry_run(plan: Any, registries: Any) -> int:
    from mmfw.executors.runs import run_status
    from mmfw.sweep.study import model_facts

    print(f"{len(plan.points) - len(plan.skipped)} point(s) x {len(plan.sweep.seeds)} seed(s) = {len(plan.runs)} run(s) in "
          f"{plan.study_dir}")
    facts: dict[int, dict[str, Any]] = {}
    for run in plan.runs:
        if run.point.index not in facts:
            facts[run.point.index] = model_facts(run, registries)
        f = facts[run.point.index]
        params = (f"{f['params_total']:,} params ({f['params_trainable']:,} trainable), {f['image_tokens']} image "
                  "tokens") if f else "params n/a (the tokenizer is built by the first run)"
        state = run_status(run.run_dir) if run.run_dir.exists() else "pending"
        print(f"[{run.point.index}] {run.point.label:<28} seed {run.seed:<3} {run.fingerprint}  {state:<11} {params}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.target in SUBCOMMANDS:
        d = _study_dir(args)
        return status(d) if args.target == "status" else report(d)
    if args.study_dir:
        raise CLIError(f"unexpected argument {args.study_dir!r} (mmfw sweep SWEEP.yaml [options])")
    if args.parallel < 1:
        raise CLIError("--parallel must be at least 1")
    if args.threads is not None and args.threads < 1:
        raise CLIError("--threads must be at least 1")
    from mmfw.components import default_registries
    from mmfw.sweep.expand import plan_study

    registries = default_registries()
    plan = plan_study(args.target, registries, args.output_dir)
    for point, problem in plan.skipped:
        print(f"note: optional point {point.index} ({point.label}) left out: {problem}", file=sys.stderr)
    from mmfw.executors import build_executor

    executor = build_executor(registries, plan.sweep.executor.model_dump(), args.executor, study_dir=plan.study_dir,
                              parallel=args.parallel, source=args.target)  # settings checked before anything runs
    if args.dry_run:
        return _dry_run(plan, registries)
    from mmfw.sweep.report import write_report
    from mmfw.sweep.study import default_threads, run_study

    threads = args.threads or default_threads(args.parallel)
    total = len(plan.runs)
    seen = [0]

    def on_event(kind: str, run: Any, outcome: Any) -> None:
        seen[0] += 1
        metric = plan.sweep.metric
        if kind.startswith("skip-"):
            print(f"[{seen[0]}/{total}] {kind[5:]:<8} {run.name} (not trained again)", flush=True)
            return
        from mmfw.executors.runs import FINAL_METRICS, read_json
        from mmfw.sweep.report import flat_metrics

        value = flat_metrics(read_json(run.run_dir / FINAL_METRICS) or {}).get(metric)
        detail = f"{metric}={value:.4f}" if value is not None else (outcome.error or "")
        wall = f" ({outcome.wall_s:.0f} s)" if outcome.wall_s is not None else ""
        print(f"[{seen[0]}/{total}] {kind:<8} {run.name}  {detail}{wall}", flush=True)

    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        statuses = run_study(plan, executor, registries, threads, fail_fast=args.fail_fast, on_event=on_event)
    finally:
        signal.signal(signal.SIGTERM, previous)
        write_report(plan.study_dir)
    print((plan.study_dir / "results.md").read_text(encoding="utf-8"))
    failed = [name for name, s in statuses.items() if s == "failed"]
    not_done = [name for name, s in statuses.items() if s != "done"]
    if failed or not_done:
        print(f"error: {len(failed)} run(s) failed, {len(not_done)} not done (mmfw sweep status {plan.study_dir})",
              file=sys.stderr)
        return 1
    return 0


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
