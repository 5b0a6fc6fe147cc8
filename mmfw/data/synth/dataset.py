"""Writing a synthetic dataset (:func:`generate_synthetic_vqa`) and reusing one made with the same arguments
(:func:`ensure_synthetic_vqa`)."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmfw.data.synth.questions import EXTRA_QUESTION_TASKS, _generate_split
from mmfw.data.synth.scenes import MAX_COUNT, TASKS, _Canvas
from mmfw.errors import InvalidArgumentError

logger = logging.getLogger(__name__)

#: Bumped whenever the generator's output for given arguments changes (invalidates cached datasets).
GENERATOR_VERSION = 2
_MIN_IMAGE_SIZE = 32


@dataclass(frozen=True)
class SynthPaths:
    """Locations of a generated synthetic dataset."""

    root: Path
    train: Path
    eval: Path
    images: Path


def _paths(out_dir: str | Path) -> SynthPaths:
    root = Path(out_dir)
    return SynthPaths(root=root, train=root / "train.json", eval=root / "eval.json", images=root / "images")


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _meta(
    num_train: int, num_eval: int, image_size: int, seed: int, tasks: Sequence[str], extra: Sequence[str],
    weights: dict[str, float], width: int | None = None, shape_scale: float = 1.0, max_count: int = 4,
) -> dict[str, Any]:
    meta = {
        "generator_version": GENERATOR_VERSION,
        "num_train": int(num_train),
        "num_eval": int(num_eval),
        "image_size": int(image_size),
        "seed": int(seed),
        "tasks": list(tasks),
    }
    if extra:  # datasets generated before the option existed stay valid
        meta["extra_train_questions"] = list(extra)
    if weights:
        meta["train_task_weights"] = {t: float(w) for t, w in sorted(weights.items())}
    if width is not None and width != image_size:
        meta["width"] = int(width)
    if shape_scale != 1:
        meta["shape_scale"] = float(shape_scale)
    if max_count != 4:
        meta["max_count"] = int(max_count)
    return meta


def _dedupe(names: Sequence[str]) -> tuple[str, ...] | str:
    """``names`` without repeats, in order (a bare string is passed through for :func:`_validate` to reject)."""
    return names if isinstance(names, str) else tuple(dict.fromkeys(names))


def _task_weights(weights: dict[str, float] | None, tasks: Sequence[str]) -> dict[str, float]:
    """The weights of ``tasks`` that are not 1 (the default), checked."""
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(tasks))
    if unknown:
        raise InvalidArgumentError(f"train_task_weights {unknown}: not among the tasks {list(tasks)}")
    bad = {t: w for t, w in weights.items() if not (isinstance(w, (int, float)) and w > 0 and np.isfinite(w))}
    if bad:
        raise InvalidArgumentError(f"train_task_weights {bad}: weights must be positive numbers")
    return {t: float(w) for t, w in weights.items() if w != 1}


def _validate(num_train: int, num_eval: int, image_size: int, tasks: Sequence[str], extra: Sequence[str],
              width: int | None = None, shape_scale: float = 1.0, max_count: int = 4) -> None:
    if not 1 <= max_count <= MAX_COUNT:
        raise InvalidArgumentError(f"max_count must be in [1, {MAX_COUNT}], got {max_count}")
    if width is not None and width < _MIN_IMAGE_SIZE:
        raise ValueError(f"width must be >= {_MIN_IMAGE_SIZE}, got {width}")
    if not 0.25 <= shape_scale <= 1:
        raise ValueError(f"shape_scale must be in [0.25, 1], got {shape_scale}")
    if isinstance(extra, str):
        raise TypeError("extra_train_questions must be a sequence of task names, not a string")
    bad = [t for t in extra if t not in EXTRA_QUESTION_TASKS]
    if bad:
        raise InvalidArgumentError(f"extra_train_questions {bad}: expected a subset of {EXTRA_QUESTION_TASKS}")
    if num_train < 0 or num_eval < 0:
        raise InvalidArgumentError("num_train and num_eval must be non-negative")
    if image_size < _MIN_IMAGE_SIZE:
        raise InvalidArgumentError(f"image_size must be >= {_MIN_IMAGE_SIZE}, got {image_size}")
    if isinstance(tasks, str):
        raise TypeError("tasks must be a sequence of task names, not a string")
    if not tasks:
        raise InvalidArgumentError("tasks must not be empty")
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise InvalidArgumentError(f"unknown tasks {unknown}; expected a subset of {TASKS}")


def _write_dataset(paths: SynthPaths, canvas: _Canvas, seed: int, sizes: tuple[int, int], tasks: Sequence[str],
                   extra: Sequence[str], weights: dict[str, float], max_count: int) -> None:
    """The images and both JSON files (the metadata is written after them, by the caller)."""
    paths.images.mkdir(parents=True, exist_ok=True)
    (paths.root / "synth_meta.json").unlink(missing_ok=True)  # invalidate first: an interrupted run must not look complete
    for stale in paths.images.glob("*.png"):
        if stale.name.startswith(("train_", "eval_")):
            stale.unlink()
    start = time.perf_counter()
    # Independent streams per split: eval content does not depend on num_train and vice versa.
    for stream, (split, n, json_path) in enumerate((("train", sizes[0], paths.train), ("eval", sizes[1], paths.eval))):
        rng = np.random.default_rng([int(seed), stream])
        train = split == "train"
        asked = [t for t in extra if t in tasks] if train else []
        records = _generate_split(split, n, rng, paths.root, canvas, tasks, asked, weights if train else None,
                                  max_count)
        _write_text_atomic(json_path, json.dumps(records, indent=1) + "\n")
    logger.info("generated synthetic VQA in %s: %d train + %d eval images (%dx%dpx, tasks=%s) in %.1fs", paths.root,
                sizes[0], sizes[1], canvas.width, canvas.height, ",".join(tasks), time.perf_counter() - start)


def generate_synthetic_vqa(
    out_dir: str | Path,
    num_train: int,
    num_eval: int,
    image_size: int = 64,
    seed: int = 0,
    tasks: Sequence[str] = TASKS,
    extra_train_questions: Sequence[str] = (),
    train_task_weights: dict[str, float] | None = None,
    width: int | None = None,
    shape_scale: float = 1.0,
    max_count: int = 4,
) -> SynthPaths:
    """Generate the synthetic VQA dataset into ``out_dir`` (always regenerates; see :func:`ensure_synthetic_vqa`).

    Args:
        out_dir: Output directory (created if missing). Stale ``train_*/eval_*`` PNGs from earlier runs are removed.
        num_train: Number of training records (one image each).
        num_eval: Number of evaluation records (one image each).
        image_size: Side length of the square RGB images, at least 32.
        seed: Random seed; the same arguments give byte-identical JSON and PNG files.
        tasks: Question families to include, a subset of :data:`TASKS`. The split is balanced over them.
        extra_train_questions: Tasks (of :data:`EXTRA_QUESTION_TASKS` and ``tasks``) also asked about every
            one-shape training image whose scene answers them, as further turns after its balanced question, in
            random order; position only when the shape lies inside one quadrant. The eval split keeps one question.
        train_task_weights: Relative share of each task among the training images (tasks not named: 1), e.g.
            ``{"count": 2}`` makes count scenes two in five with four tasks; the eval split stays balanced.
        width: Image width in pixels (default ``image_size``: square images); ``image_size`` is then the height.
            Quadrants are the four halves-by-halves of the wide (or tall) image.
        shape_scale: Factor on every shape size (sizes are relative to the shorter side): small shapes make
            fine detail matter, e.g. for comparing image strategies on wide images.
        max_count: Count scenes hold 1 to ``max_count`` shapes (at most 9); above 4 the shapes are small, each in its
            own cell of a 3x3 grid (a side of 60-100 % of the cell, times ``shape_scale``), instead of one per quadrant.

    Returns:
        The dataset's :class:`SynthPaths`.
    """
    tasks, extra = _dedupe(tasks), _dedupe(extra_train_questions)
    _validate(num_train, num_eval, image_size, tasks, extra, width, shape_scale, max_count)
    weights = _task_weights(train_task_weights, tasks)
    canvas = _Canvas(width or image_size, image_size, float(shape_scale))
    paths = _paths(out_dir)
    _write_dataset(paths, canvas, seed, (num_train, num_eval), tasks, extra, weights, max_count)
    meta = _meta(num_train, num_eval, image_size, seed, tasks, extra, weights, width, shape_scale, max_count)
    _write_text_atomic(paths.root / "synth_meta.json", json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return paths


def ensure_synthetic_vqa(
    out_dir: str | Path,
    num_train: int,
    num_eval: int,
    image_size: int = 64,
    seed: int = 0,
    tasks: Sequence[str] = TASKS,
    extra_train_questions: Sequence[str] = (),
    train_task_weights: dict[str, float] | None = None,
    width: int | None = None,
    shape_scale: float = 1.0,
    max_count: int = 4,
) -> SynthPaths:
    """Return the dataset in ``out_dir``, generating it only if it is missing or was made with other arguments.

    The dataset is reused when ``train.json``, ``eval.json`` and ``synth_meta.json`` exist and the stored
    arguments equal the requested ones; otherwise :func:`generate_synthetic_vqa` is called.
    """
    tasks, extra = _dedupe(tasks), _dedupe(extra_train_questions)
    _validate(num_train, num_eval, image_size, tasks, extra, width, shape_scale, max_count)
    weights = _task_weights(train_task_weights, tasks)
    paths = _paths(out_dir)
    meta_path = paths.root / "synth_meta.json"
    wanted = _meta(num_train, num_eval, image_size, seed, tasks, extra, weights, width, shape_scale, max_count)
    if paths.train.is_file() and paths.eval.is_file() and meta_path.is_file():
        try:
            stored = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            stored = None
        if stored == wanted:
            logger.info("reusing synthetic VQA dataset in %s", paths.root)
            return paths
        logger.info("synthetic VQA in %s was generated with other arguments; regenerating", paths.root)
    return generate_synthetic_vqa(out_dir, num_train, num_eval, image_size=image_size, seed=seed, tasks=tasks,
                                  extra_train_questions=extra, train_task_weights=weights, width=width,
                                  shape_scale=shape_scale, max_count=max_count)
