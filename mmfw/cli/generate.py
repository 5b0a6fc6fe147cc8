"""``mmfw generate RUN_DIR --image PATH --prompt TEXT``: print the model's answer (new text only)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmfw.cli.common import CLIError, located_model_errors, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("generate", help="answer a prompt about an image with a trained run")
    p.add_argument("run_dir", help="run directory or checkpoint directory")
    p.add_argument("--image", action="append", default=[], help="image file (repeat for several images)")
    p.add_argument("--prompt", required=True, help="the question; <image> marks where images go")
    p.add_argument("--max-new-tokens", type=positive_int, default=64)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    with located_model_errors(args.run_dir):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from mmfw.inference import load_pipeline

    check_device(args.device)
    for image in args.image:
        if not Path(image).is_file():
            raise CLIError(f"--image {image}: {'not a file' if Path(image).exists() else 'file not found'}")
    pipeline = load_pipeline(args.run_dir, device=args.device)
    print(pipeline.generate(args.image, args.prompt, max_new_tokens=args.max_new_tokens))
    return 0


def check_device(name: str) -> None:
    """``--device NAME`` names a device this machine has (a one-line error otherwise)."""
    import torch

    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as e:
        raise CLIError(f"--device {name}: not a device name ({e})") from None
    available = {"cpu": True, "meta": False, "cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
    if not available.get(device.type, False):
        raise CLIError(f"--device {name}: no {device.type} device on this machine; use --device cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise CLIError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s)")
