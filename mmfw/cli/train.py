"""``mmfw train CONFIG``: validate the config, prepare data if asked, train, evaluate, save the run."""

from __future__ import annotations

import argparse
import json

from mmfw.cli.common import add_config_arguments, load_experiment
from mmfw.components import default_plugin_manager, default_registries


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model from an experiment YAML")
    add_config_arguments(p)
    p.add_argument("--output-dir", help="run directory (overrides output_dir)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.output_dir:
        args.overrides = [*args.overrides, f"output_dir={args.output_dir}"]
    cfg = load_experiment(args)
    from mmfw.training.trainer import Trainer

    metrics = Trainer(cfg, default_registries(), default_plugin_manager(), progress=not args.no_progress).train()
    print(json.dumps({"run_dir": str(cfg.run_dir), **{k: round(v, 6) for k, v in metrics.items()}}))
    return 0
