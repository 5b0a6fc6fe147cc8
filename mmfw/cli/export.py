"""``mmfw export RUN_DIR OUT --format hf-llava|hf-llava-next``: a trained model as a transformers checkpoint."""

from __future__ import annotations

import argparse

from mmfw.cli.common import check_new_output_dir, located_model_errors
from mmfw.export import FORMATS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained model to transformers' Llava / LlavaNext classes",
                       description="Write a transformers checkpoint (model + processor) equivalent to a trained "
                                   "mmfw model, loadable with transformers' Auto classes.")
    p.add_argument("run_dir", help="run directory (its final model) or model/checkpoint directory")
    p.add_argument("out", help="output directory")
    p.add_argument("--format", choices=FORMATS, default=None,
                   help="target classes (default: the one the image strategy maps to: pad/resize -> hf-llava, "
                        "anyres -> hf-llava-next)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with located_model_errors(args.run_dir):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from mmfw.export import export_hf_llava
    from mmfw.model.io import resolve_model_dir

    check_new_output_dir(args.out)
    resolve_model_dir(args.run_dir)
    out, fmt = export_hf_llava(args.run_dir, args.out, args.format)
    print(f"exported {args.run_dir} as {fmt} to {out}")
    return 0
