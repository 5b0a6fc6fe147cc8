"""``mmfw export RUN_DIR OUT [--format auto|hf|hf-llava|hf-llava-next] [--overwrite]``: a trained model as a
transformers checkpoint (model + processor) that transformers' Auto classes load."""

from __future__ import annotations

import argparse

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
    from mmfw.cli.common import CLIError
    from mmfw.export.hf_native import ExportTargetExistsError, export

    try:
        out, fmt = export(args.run_dir, args.out, args.format, overwrite=args.overwrite)
    except ExportTargetExistsError as err:
        raise CLIError(str(err)) from None
    print(f"exported {args.run_dir} as {fmt} to {out}")
    return 0
