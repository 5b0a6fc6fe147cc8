"""``mmfw data ...``: dataset utilities (``synth``: write the procedural visual-QA dataset)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="dataset utilities")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    s = dsub.add_parser("synth", help="write a synthetic visual-QA dataset (PNG images + LLaVA JSON)")
    s.add_argument("--out", default="data/synth", help="output directory")
    s.add_argument("--num-train", type=int, default=20000)
    s.add_argument("--num-eval", type=int, default=600)
    s.add_argument("--image-size", type=int, default=64)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--tasks", nargs="+", default=["color", "shape", "position", "count"],
                   choices=["color", "shape", "position", "count"])
    s.set_defaults(func=run_synth)


def run_synth(args: argparse.Namespace) -> int:
    from mmfw.data.synth import generate_synthetic_vqa

    paths = generate_synthetic_vqa(args.out, num_train=args.num_train, num_eval=args.num_eval,
                                   image_size=args.image_size, seed=args.seed, tasks=args.tasks)
    print(f"wrote {paths.train} and {paths.eval} (images in {paths.images})")
    return 0
