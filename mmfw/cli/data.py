"""``mmfw data ...``: dataset utilities.

* ``synth``: write the procedural visual-QA dataset (``--out``, default ``data/synth``; an existing dataset there is
  replaced only with ``--overwrite``).
* ``check CONFIG``: run every record of the configured datasets (``data`` and each stage's own ``data``) through
  the training pipeline (without training) and report every problem (one line each on stderr, with file, line, record id and reason), the distribution of
  sequence lengths (text + image tokens) and how many samples ``data.max_length`` truncates or drops. Exit code 2
  when any record is bad.
* ``convert SOURCE --out DIR``: LLaVA JSON/JSONL -> WebDataset tar shards (``--format webdataset``, the default)
  or a Hugging Face ``save_to_disk`` directory (``--format hf``), for streamed training.
* ``show CONFIG --index N``: one sample as the model sees it, supervised spans marked ``[[...]]``; with
  ``--augment OUT.png``, its images augmented as ``data.augment`` would in training (``--epoch E``), written as PNG.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from mmfw.cli.common import CLIError, add_config_arguments, load_experiment, positive_int, require_prepared
from mmfw.config.data import SyntheticDataConfig

if TYPE_CHECKING:
    from mmfw.config import ExperimentConfig
    from mmfw.image_strategies.base import ImageStrategy


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="dataset utilities")
    dsub = p.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    s = dsub.add_parser("synth", help="write a synthetic visual-QA dataset (PNG images + LLaVA JSON)")
    _add_synth_arguments(s)
    s.set_defaults(func=run_synth)

    c = dsub.add_parser("check", help="report every problem in the configured datasets, and their token lengths")
    add_config_arguments(c)
    c.add_argument("--split", choices=["train", "eval", "all"], default="all")
    c.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="load only the first N samples per split")
    c.add_argument("--prepare", action="store_true",
                   help="first generate what data.synthetic / data.build_tokenizer describe, as training would")
    c.set_defaults(func=run_check)

    w = dsub.add_parser("show", help="print one sample with its supervised tokens marked [[...]]")
    add_config_arguments(w)
    w.add_argument("--split", choices=["train", "eval"], default="train")
    w.add_argument("--prepare", action="store_true",
                   help="first generate what data.synthetic / data.build_tokenizer describe, as training would")
    which = w.add_mutually_exclusive_group(required=True)
    which.add_argument("--index", type=int, help="sample index in the split (records that parse, in file order)")
    which.add_argument("--id", dest="record_id", help="the record's id")
    w.add_argument("--augment", metavar="OUT.png", default=None,
                   help="augment the sample's images as data.augment does in training and write them as PNG (an "
                        "image k > 0 goes to OUT-k.png)")
    w.add_argument("--epoch", type=int, default=0, help="the training epoch whose augmentation --augment shows")
    w.set_defaults(func=run_show)

    v = dsub.add_parser("convert", help="write LLaVA JSON/JSONL as WebDataset tar shards or a Hugging Face dataset")
    v.add_argument("source", help="a LLaVA .json or .jsonl file")
    v.add_argument("--out", required=True, help="output directory")
    v.add_argument("--format", choices=["webdataset", "hf"], default="webdataset")
    v.add_argument("--shard-size", type=positive_int, default=10_000, help="records per tar shard")
    v.add_argument("--image-root", default=None, help="directory the image paths are relative to (default: the "
                                                      "JSON file's)")
    v.add_argument("--no-embed", action="store_true", help="webdataset: keep image paths instead of copying the "
                                                           "images into the shards")
    v.set_defaults(func=run_convert)


def _literal_choices(annotation: Any) -> list[str]:
    """The names of ``tuple[Literal[...], ...]``."""
    return list(get_args(get_args(annotation)[0]))


def _add_synth_arguments(s: argparse.ArgumentParser) -> None:
    """The flags of ``mmfw data synth``: defaults and choices are those of ``data.synthetic``
    (:class:`~mmfw.config.data.SyntheticDataConfig`)."""
    fields = SyntheticDataConfig.model_fields
    s.add_argument("--out", default=fields["out_dir"].default, help="output directory")
    s.add_argument("--overwrite", action="store_true", help="replace a dataset that is already in --out")
    for name in ("num_train", "num_eval", "image_size", "seed"):
        s.add_argument("--" + name.replace("_", "-"), type=int, default=fields[name].default)
    s.add_argument("--tasks", nargs="+", default=list(fields["tasks"].default),
                   choices=_literal_choices(fields["tasks"].annotation))
    extra = _literal_choices(fields["extra_train_questions"].annotation)
    s.add_argument("--extra-train-questions", nargs="+", default=list(fields["extra_train_questions"].default),
                   choices=extra, metavar="TASK", help="also ask these questions about every one-shape training "
                   f"image that answers them ({', '.join(extra)})")
    s.add_argument("--train-task-weights", nargs="+", default=[], type=_task_weight, metavar="TASK=WEIGHT",
                   help="relative share of each task among the training images, e.g. count=2 (others: 1)")
    s.add_argument("--width", type=int, default=fields["width"].default, metavar="PX",
                   help="image width (default --image-size: square); --image-size is then the height")
    s.add_argument("--shape-scale", type=float, default=fields["shape_scale"].default, metavar="F",
                   help="factor on every shape size, 0.25 to 1 (small shapes: fine detail matters)")
    s.add_argument("--max-count", type=int, default=fields["max_count"].default, metavar="N",
                   help="count scenes hold 1 to N shapes, 1 to 9 (above 4: small shapes in a 3x3 grid)")


def _task_weight(text: str) -> tuple[str, float]:
    """``TASK=WEIGHT`` -> ``(task, weight)``; the generator checks the task and the weight."""
    task, sep, weight = text.partition("=")
    try:
        if sep:
            return task, float(weight)
    except ValueError:
        pass
    raise argparse.ArgumentTypeError(f"{text!r}: expected TASK=WEIGHT, e.g. count=2")


_SYNTH_FLAGS = {"num_train": "--num-train", "num_eval": "--num-eval", "image_size": "--image-size",
                "tasks": "--tasks", "extra_train_questions": "--extra-train-questions",
                "train_task_weights": "--train-task-weights", "width": "--width", "shape_scale": "--shape-scale",
                "max_count": "--max-count"}


def _check_synth_args(args: argparse.Namespace) -> None:
    """The flags against the bounds of ``data.synthetic`` (the same schema a config is checked with)."""
    from pydantic import ValidationError

    try:
        SyntheticDataConfig(out_dir=args.out, num_train=args.num_train, num_eval=args.num_eval,
                            image_size=args.image_size, seed=args.seed, tasks=args.tasks,
                            extra_train_questions=args.extra_train_questions,
                            train_task_weights=dict(args.train_task_weights), width=args.width,
                            shape_scale=args.shape_scale, max_count=args.max_count)
    except ValidationError as err:
        lines = []
        for e in err.errors():
            flag = _SYNTH_FLAGS.get(str(e["loc"][0]), "") if e["loc"] else ""
            detail = ".".join(str(x) for x in e["loc"][1:])
            lines.append(f"{flag or 'mmfw data synth'}{' ' + detail if detail else ''}: "
                         f"{e['msg'].removeprefix('Value error, ')}")
        raise CLIError("\n".join(lines)) from None
    out = Path(args.out)
    for p in (out, *out.parents):
        if p.exists():
            if not p.is_dir():
                raise CLIError(f"--out {out}: {p} is a file, not a directory")
            break


def run_synth(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mmfw.data.synth import generate_synthetic_vqa

    _check_synth_args(args)
    present = [name for name in ("train.json", "eval.json") if (Path(args.out) / name).exists()]
    if present and not args.overwrite:
        raise CLIError(f"{args.out} already holds a dataset ({', '.join(present)}); pass --overwrite to replace it "
                       "or --out DIR to write another one")

    paths = generate_synthetic_vqa(args.out, num_train=args.num_train, num_eval=args.num_eval,
                                   image_size=args.image_size, seed=args.seed, tasks=args.tasks,
                                   extra_train_questions=args.extra_train_questions,
                                   train_task_weights=dict(args.train_task_weights), width=args.width,
                                   shape_scale=args.shape_scale, max_count=args.max_count)
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
    require_prepared(cfg, args.config)
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
                               name=name, image_markers=cfg.model.fusion.image_markers)
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
    dataset = open_dataset(cfg.data, specs, tokenizer, strategy, image_token=cfg.model.fusion.image_token, name=name,
                           image_markers=cfg.model.fusion.image_markers)
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
    if args.augment is not None:
        _set_augment(cfg, dataset, args.epoch)
    item = dataset.inspect(index)
    if isinstance(item, SkippedSample):
        print(f"error: {name}: {item.describe()}", file=sys.stderr)
        return 2
    token = cfg.model.fusion.image_token
    ids, labels = item["input_ids"].tolist(), item["labels"].tolist()
    image_ids = {dataset.image_token_id, *(tokenizer.convert_tokens_to_ids(list(cfg.model.fusion.image_markers or ())))}
    image_tokens = sum(1 for t in ids if t in image_ids)
    print(f"{name}[{index}]: record {item['id']!r} ({dataset.location(index)})")
    for k, (path, image) in enumerate(zip(dataset.image_paths(index), item["images"], strict=False)):
        w, h = image.size
        print(f"  image {k}: {path} ({w}x{h}, {image.pixel_values.shape[0]} tile(s)) -> "
              f"{cfg.model.fusion.image_sequence_length(strategy.num_tokens(image.size))} tokens")
    cut = item["truncated"]
    how = (f"; truncated from {cut.num_tokens} by data.truncation {cut.policy}" if cut is not None else "")
    print(f"  tokens: {len(ids)} (text {len(ids) - image_tokens}, image {image_tokens}), supervised "
          f"{sum(1 for x in labels if x != IGNORE_INDEX)}{how}")
    print(f"  supervised tokens are shown [[like this]]; {token}×N stands for one image's N tokens")
    print("-" * 80)
    print(render_supervision(ids, labels, tokenizer, image_token=token))
    if args.augment is not None:
        _write_augmented(dataset, index, args.augment)
    return 0


def _set_augment(cfg: ExperimentConfig, dataset: Any, epoch: int) -> None:
    from mmfw.data.augment import ImageAugmenter

    if cfg.data.augment is None:
        raise CLIError("--augment: data.augment is not set in the config")
    dataset.augment = ImageAugmenter(cfg.data.augment, cfg.seed)  # the seed of the first stage's training
    dataset.set_epoch(epoch)


def _write_augmented(dataset: Any, index: int, out: str) -> None:
    from pathlib import Path

    from mmfw.data.images import load_image

    base = Path(out)
    paths = dataset.image_paths(index)
    if not paths:
        raise CLIError(f"--augment: sample {index} has no image")
    base.parent.mkdir(parents=True, exist_ok=True)
    for k, path in enumerate(paths):
        target = base if k == 0 else base.with_name(f"{base.stem}-{k}{base.suffix or '.png'}")
        dataset.augment(load_image(path), index, k).save(target, format="PNG")
        print(f"augmented image {k} (epoch {dataset.augment.epoch}): {target}")


def run_convert(args: argparse.Namespace) -> int:
    from mmfw.data.convert import convert_to_hf, convert_to_webdataset

    if args.format == "hf":
        out = convert_to_hf(args.source, args.out)
    else:
        out = convert_to_webdataset(args.source, args.out, shard_size=args.shard_size,
                                    embed_images=not args.no_embed, image_root=args.image_root)
    for problem in out["problems"]:
        print(problem, file=sys.stderr)
    shards = f" in {len(out['shards'])} shard(s)" if "shards" in out else ""
    print(f"{args.out}: {out['records']} record(s){shards}; {len(out['problems'])} problem(s)")
    return 2 if out["problems"] else 0
