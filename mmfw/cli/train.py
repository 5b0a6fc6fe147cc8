"""``mmfw train CONFIG``: validate the config, prepare data if asked, train every stage, evaluate, save the run.

``mmfw train CONFIG --resume`` (or ``mmfw train RUN_DIR``) continues a run: finished stages are skipped and the
current one restarts from its latest checkpoint with the exact optimizer, scheduler, RNG and data position.
``--num-processes N`` re-launches the command through ``accelerate launch`` (DDP; gloo on CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from mmfw.cli.common import CLIError, add_config_arguments, load_checked_experiment
from mmfw.components import default_plugin_manager, default_registries


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from an experiment YAML (or resume a run directory)")
    add_config_arguments(p)
    p.add_argument("--output-dir", help="run directory (overrides output_dir)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in output_dir: skip finished stages, restart from the latest checkpoint")
    p.add_argument("--overwrite", action="store_true", help="delete the previous run in output_dir and start over")
    p.add_argument("--num-processes", type=int, default=1, metavar="N",
                   help="train with N processes through `accelerate launch` (DDP; gloo on CPU)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _launch(args: argparse.Namespace) -> int:
    """Re-run this command under ``accelerate launch`` with ``args.num_processes`` processes."""
    import torch

    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes",
           str(args.num_processes), "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "-m", "mmfw"]
    if getattr(args, "debug", False):
        cmd.append("--debug")
    if getattr(args, "quiet", False):
        cmd.append("-q")
    cmd += ["train", args.config]
    for override in args.overrides:
        cmd += ["--set", override]
    cmd += [flag for flag, on in (("--resume", args.resume), ("--overwrite", args.overwrite),
                                  ("--no-progress", args.no_progress)) if on]
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "1"  # accelerate's multi-process launcher then sets up gloo (MULTI_CPU)
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.num_processes)))
    return subprocess.call(cmd, env=env)


def run(args: argparse.Namespace) -> int:
    if Path(args.config).is_dir():  # a run directory: resume it with its own resolved config
        from mmfw.config.loader import RESOLVED_CONFIG_NAME

        run_dir = Path(args.config)
        if not (run_dir / RESOLVED_CONFIG_NAME).exists():
            raise CLIError(f"{run_dir} is a directory without {RESOLVED_CONFIG_NAME}; pass an experiment YAML")
        args.config = str(run_dir / RESOLVED_CONFIG_NAME)
        args.overrides = [*args.overrides, f"output_dir={run_dir}"]
        args.resume = True
    if args.output_dir:
        args.overrides = [*args.overrides, f"output_dir={args.output_dir}"]
        args.output_dir = None
    if args.resume and args.overwrite:
        raise CLIError("--resume and --overwrite exclude each other")
    if args.num_processes < 1:
        raise CLIError("--num-processes must be at least 1")
    registries = default_registries()
    cfg, checked = load_checked_experiment(args, registries)
    if args.num_processes > 1 and "LOCAL_RANK" not in os.environ:
        return _launch(args)
    from mmfw.model.builder import CheckpointMismatchError
    from mmfw.training.signals import graceful_stop
    from mmfw.training.trainer import Trainer

    # the model validation built on the meta device (cached; None when that is not cheap) serves the trainer's
    # policy pre-check too, so one `mmfw train` builds it once
    trainer = Trainer(cfg, registries, default_plugin_manager(), progress=not args.no_progress,
                      resume=args.resume, overwrite=args.overwrite, meta_model=checked.meta_model())
    del checked
    with graceful_stop() as stop:
        trainer.stop = stop
        try:
            metrics = trainer.train()
        except CheckpointMismatchError as e:
            raise CLIError(f"{cfg.run_dir}: {e}") from e
    if trainer.accelerator.is_main_process:
        print(json.dumps({"run_dir": str(cfg.run_dir), **{k: round(v, 6) for k, v in metrics.items()}}))
        print("\n".join(next_steps(cfg.run_dir, metrics)))
    return 0


def next_steps(run_dir: Path, metrics: dict[str, float]) -> list[str]:
    """What the end of ``mmfw train`` prints after the metrics line: where the results are, what to run next."""
    import shlex

    from mmfw.training.evaluate import PREDICTIONS_FILE, read_predictions
    from mmfw.training.plots import PLOTS_DIR

    q = lambda text: shlex.quote(str(text))  # noqa: E731
    found = [name for name in ("metrics.json", PREDICTIONS_FILE, f"{PLOTS_DIR}/", "model/")
             if (run_dir / name.rstrip("/")).exists()]
    accuracy = f" (eval accuracy {metrics['eval/accuracy']:.4f})" if "eval/accuracy" in metrics else ""
    lines = [f"results in {run_dir}/: {', '.join(found)}{accuracy}"]
    predictions = read_predictions(run_dir / PREDICTIONS_FILE) if (run_dir / PREDICTIONS_FILE).exists() else []
    first = next((p for p in predictions if p.get("images")), None)
    if first is not None:
        lines.append(f"next: mmfw generate {q(run_dir)} --image {q(first['images'][0])} --prompt {q(first['question'])}")
    else:
        lines.append(f"next: mmfw generate {q(run_dir)} --image IMAGE --prompt QUESTION")
    if (run_dir / PLOTS_DIR).exists():
        lines.append(f"      open {run_dir / PLOTS_DIR}/*.png, or redraw them with: mmfw plot {q(run_dir)}")
    return lines
