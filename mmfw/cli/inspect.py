"""``mmfw inspect CONFIG``: parameters, image tokens and memory of a config's model, built on the meta device."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from mmfw.cli.common import CLIError, add_config_arguments, load_experiment, require_prepared

if TYPE_CHECKING:
    from mmfw.config import ExperimentConfig


def parse_size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not m or int(m.group(1)) == 0 or int(m.group(2)) == 0:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT in pixels (e.g. 672x672), got {text!r}")
    return int(m.group(1)), int(m.group(2))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("inspect", help="parameters, image tokens and memory of a config's model (no weights)",
                       description="Build the model on the meta device (no weights, no download) and report "
                                   "parameter counts (total and trainable under training.policy), the image tokens "
                                   "of an image size, and the memory for weights, gradients and AdamW state.")
    add_config_arguments(p)
    p.add_argument("--image-size", type=parse_size, metavar="WxH",
                   help="image size for the token count (default: the encoder's input size)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def _check_model(cfg: ExperimentConfig, config_path: str) -> None:
    """The model's own checks (sources on disk, LLM architecture) and the tokenizer being there."""
    import functools

    from mmfw.components import default_registries
    from mmfw.config import ConfigError
    from mmfw.config.input_checks import check_llm_architecture, check_local_sources
    from mmfw.config.validate import check_model_sources
    from mmfw.training.validate import ValidationContext

    ctx = ValidationContext(cfg, default_registries())
    local = functools.partial(check_local_sources, ask_hub=False)  # inspect downloads nothing
    problems = [p for check in (check_model_sources, local, check_llm_architecture) for p in check(ctx)]
    if problems:
        raise ConfigError(problems, source=config_path)
    tokenizer = cfg.model.llm.sources().get("tokenizer")
    if tokenizer is not None and ctx.is_generated(tokenizer) and not Path(tokenizer).exists():
        require_prepared(cfg, config_path)


def run(args: argparse.Namespace) -> int:
    from mmfw.components import default_registries

    cfg = load_experiment(args, validate=False)  # the model only: data files need not exist
    _check_model(cfg, args.config)
    from mmfw.inspection import format_report, inspect_config  # torch and the model libraries: after the config is read

    try:
        report = inspect_config(cfg, default_registries(), args.image_size)
    except NotImplementedError as err:  # an operation the meta device cannot run
        raise CLIError(f"cannot build this model on the meta device: {err}") from err
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
