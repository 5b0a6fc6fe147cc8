"""``mmfw generate RUN_DIR --image PATH --prompt TEXT``: print the model's answer (new text only)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="answer a prompt about an image with a trained run")
    p.add_argument("run_dir", help="run directory or checkpoint directory")
    p.add_argument("--image", action="append", default=[], help="image file (repeat for several images)")
    p.add_argument("--prompt", required=True, help="the question; <image> marks where images go")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmfw.inference import load_pipeline

    pipeline = load_pipeline(args.run_dir, device=args.device)
    print(pipeline.generate(args.image, args.prompt, max_new_tokens=args.max_new_tokens))
    return 0
