"""``mmfw merge RUN_DIR OUT``: fold a LoRA-trained run's adapters into the base weights; write a plain model dir.

``OUT`` loads with :func:`mmfw.model.io.load_model_dir` (and everything built on it) without peft, and runs as fast as
a model trained without LoRA. A run without adapters is copied as is.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mmfw.cli.common import CLIError, check_new_output_dir, located_model_errors


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="merge a run's LoRA adapters into its weights (a plain model directory)")
    p.add_argument("run_dir", help="run directory or model/checkpoint directory")
    p.add_argument("out", help="output model directory (must not exist)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with located_model_errors(args.run_dir):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from mmfw.model.io import load_model_dir, resolve_model_dir, save_model_dir
    from mmfw.training.lora import adapter_dirs

    out = Path(args.out)
    if out.exists():
        raise CLIError(f"{out} already exists; choose a new directory")
    check_new_output_dir(out)
    source = resolve_model_dir(args.run_dir)
    merged = sorted(adapter_dirs(source))
    model, tokenizer, cfg = load_model_dir(source)
    save_model_dir(model, tokenizer, cfg, out)
    what = f"merged the LoRA adapters of {', '.join(merged)}" if merged else "no adapters to merge; copied the weights"
    print(f"{out}: {what} ({source})")
    return 0
