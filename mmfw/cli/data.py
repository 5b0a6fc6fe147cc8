"""``mmfw data ...``: dataset utilities.

* ``synth``: write the procedural visual-QA dataset.
* ``check CONFIG``: run every record of the configured datasets (``data`` and each stage's own ``data``) through
  the training pipeline (without training) and report every problem (one line each on stderr, with file, line, record id and reason), the distribution of
  sequence lengths (text + image tokens) and how many samples ``data.max_length`` truncates or drops. Exit code 2
  when any record is bad.
* ``show CONFIG --index N``: one sample as the model sees it, supervised spans marked ``[[...]]``.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from mmfw.cli.common import CLIError, add_config_arguments, load_experiment

if TYPE_CHECKING:
    from mmfw.config import ExperimentConfig
    from mmfw.image_strategies.base import ImageStrategy


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
    s.add_argument("--extra-train-questions", nargs="+", default=[], choices=["color", "shape", "position"],
                   metavar="TASK", help="also ask these questions about every one-shape training image that answers"
                   " them (color, shape, position)")
    s.add_argument("--train-task-weights", nargs="+", default=[], type=_task_weight, metavar="TASK=WEIGHT",
                   help="relative share of each task among the training images, e.g. count=2 (others: 1)")
    s.add_argument("--width", type=int, default=None, metavar="PX",
                   help="image width (default --image-size: square); --image-size is then the height")
    s.add_argument("--shape-scale", type=float, default=1.0, metavar="F",
                   help="factor on every shape size, 0.25 to 1 (small shapes: fine detail matters)")
    s.set_defaults(func=run_synth)

    c = dsub.add_parser("check", help="report every problem in the configured datasets, and their token lengths")
    add_config_arguments(c)
    c.add_argument("--split", choices=["train", "eval", "all"], default="all")
    c.add_argument("--limit", type=int, default=None, metavar="N", help="load only the first N samples per split")
    c.add_argument("--prepare", action="store_true",
                   help="first generate what data.synthetic / data.build_tokenizer describe, as training would")
    c.set_defaults(func=run_check)

    w = dsub.add_parser("show", help="print one sample with its supervised tokens marked [[...]]")
    add_config_arguments(w)
    w.add_argument("--split", choices=["train", "eval"], default="train")
    which = w.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=int, help="sample index in the split (records that parse, in file order)")
    which.add_argument("--id", dest="record_id", help="the record's id")
    w.set_defaults(func=run_show)


def _task_weight(text: str) -> tuple[str, float]:
    """``TASK=WEIGHT`` -> ``(task, weight)``; the generator checks the task and the weight."""
    task, sep, weight = text.partition("=")
    try:
        if sep:
            return task, float(weight)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r}: expected TASK=WEIGHT, e.g. count=2")


def run_synth(args: argparse.Namespace) -> int:
    from mmfw.data.synth import generate_synthetic_vqa

    paths = generate_synthetic_vqa(args.out, num_train=args.num_train, num_eval=args.num_eval,
                                   image_size=args.image_size, seed=args.seed, tasks=args.tasks,
                                   extra_train_questions=args.extra_train_questions,
                                   train_task_weights=dict(args.train_task_weights), width=args.width,
                                   shape_scale=args.shape_scale)
    print(f"wrote {paths.train} and {paths.eval} (images in {paths.images})")
    return 0


def _pipeline(args: argparse.Namespace) -> tuple[ExperimentConfig, Any, ImageStrategy]:
    from mmfw.components import default_registries
    from mmfw.data.check import load_data_pipeline

    if getattr(args, "prepare", False):
        from mmfw.training.data_prep import prepare_data

        cfg = load_experiment(args, validate=False)
        prepare_data(cfg.data)
    cfg = load_experiment(args)
    tokenizer, strategy = load_data_pipeline(cfg, default_registries())
    return cfg, tokenizer, strategy


def run_check(args: argparse.Namespace) -> int:
    from mmfw.config.validate import data_sections
    from mmfw.data.check import check_dataset, open_dataset

    cfg, tokenizer, strategy = _pipeline(args)
    splits = ["train", "eval"] if args.split == "all" else [args.split]
    bad = 0
    for section, split in [(sec, split) for sec in data_sections(cfg) for split in splits if split in sec.keys]:
        specs = getattr(section.data, split)
        if not specs:
            continue
        name = f"{section.path}.{split}"
        dataset = open_dataset(section.data, specs, tokenizer, strategy, image_token=cfg.model.fusion.image_token,
                               name=name)
        result = check_dataset(dataset, limit=args.limit, progress=sys.stderr.isatty())
        for line in result.problem_lines():
            print(f"error: {line}", file=sys.stderr)
        print("\n".join(result.summary_lines()))
        bad += len(result.problems)
    return 2 if bad else 0


def run_show(args: argparse.Namespace) -> int:
    from mmfw.data.check import open_dataset
    from mmfw.data.report import SkippedSample
    from mmfw.data.tokenize import IGNORE_INDEX, render_supervision

    cfg, tokenizer, strategy = _pipeline(args)
    specs = getattr(cfg.data, args.split)
    name = f"data.{args.split}"
    if not specs:
        raise CLIError(f"{name}: no dataset configured")
    dataset = open_dataset(cfg.data, specs, tokenizer, strategy, image_token=cfg.model.fusion.image_token, name=name)
    if args.record_id is not None:
        try:
            index = dataset.index_of(args.record_id)
        except KeyError:
            raise CLIError(f"{name}: no usable record with id {args.record_id!r} (`mmfw data check` lists the "
                           "records that do not parse)") from None
    else:
        index = args.index
        if not -len(dataset) <= index < len(dataset):
            raise CLIError(f"--index {index} is out of range: {name} has {len(dataset)} usable samples")
        index %= len(dataset)
    item = dataset.inspect(index)
    if isinstance(item, SkippedSample):
        print(f"error: {name}: {item.describe()}", file=sys.stderr)
        return 2
    token = cfg.model.fusion.image_token
    ids, labels = item["input_ids"].tolist(), item["labels"].tolist()
    image_tokens = sum(1 for t in ids if t == dataset.image_token_id)
    print(f"{name}[{index}]: record {item['id']!r} ({dataset.location(index)})")
    for k, (path, image) in enumerate(zip(dataset.image_paths(index), item["images"], strict=False)):
        w, h = image.size
        print(f"  image {k}: {path} ({w}x{h}, {image.pixel_values.shape[0]} tile(s)) -> "
              f"{strategy.num_tokens(image.size)} tokens")
    cut = item["truncated"]
    how = (f"; truncated from {cut.num_tokens} by data.truncation {cut.policy}" if cut is not None else "")
    print(f"  tokens: {len(ids)} (text {len(ids) - image_tokens}, image {image_tokens}), supervised "
          f"{sum(1 for x in labels if x != IGNORE_INDEX)}{how}")
    print(f"  supervised tokens are shown [[like this]]; {token}×N stands for one image's N tokens")
    print("-" * 80)
    print(render_supervision(ids, labels, tokenizer, image_token=token))
    return 0
