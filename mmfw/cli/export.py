"""``mmfw export RUN_DIR OUT [--format auto|hf|hf-llava|hf-llava-next] [--overwrite]``: a trained model as a
transformers checkpoint (model + processor) that transformers' Auto classes load."""

from __future__ import annotations

import argparse

from mmfw.cli.common import check_new_output_dir, located_model_errors
from mmfw.export.hf_native import FORMATS


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a trained model to transformers (any composition)",
                       description="Write a transformers checkpoint (model + processor) equivalent to a trained "
                                   "mmfw model, loadable with transformers' Auto classes (docs/export.md).")
    p.add_argument("run_dir", help="run directory (its final model) or model/checkpoint directory")
    p.add_argument("out", help="output directory (missing or empty, unless --overwrite)")
    p.add_argument("--format", choices=FORMATS, default="auto",
                   help="hf: mmfw's own transformers classes, any composition (load after `import mmfw.hf`); "
                        "hf-llava / hf-llava-next: transformers' native Llava classes; auto (default): the native "
                        "one when the components map onto it, else hf")
    p.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty OUT")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with located_model_errors(args.run_dir):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from mmfw.export.hf_native import export
    from mmfw.model.io import resolve_model_dir

    if not args.overwrite:
        check_new_output_dir(args.out)
    resolve_model_dir(args.run_dir)
    out, fmt = export(args.run_dir, args.out, args.format, overwrite=args.overwrite)
    print(f"exported {args.run_dir} as {fmt} to {out}")
    return 0
