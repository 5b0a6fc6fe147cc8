"""Procedural synthetic visual-question-answering (VQA) dataset.

Generates small RGB images of coloured geometric shapes on a plain background together with LLaVA-format
conversation JSON files, so that a vision-language model can be trained and evaluated end-to-end without
downloading anything.

Layout written by :func:`generate_synthetic_vqa`::

    out_dir/
        images/train_000000.png ...  images/eval_000000.png ...
        train.json            # list of LLaVA records
        eval.json
        synth_meta.json       # generation arguments (used by :func:`ensure_synthetic_vqa`)

Each record looks like::

    {"id": "train_000000", "image": "images/train_000000.png", "task": "color",
     "conversations": [{"from": "human", "value": "<image>\\nWhat color is the shape?"},
                       {"from": "gpt", "value": "red"}]}

The image path is relative to the JSON file's directory. The extra ``task`` key names the question family and
can be used for per-task metrics; LLaVA loaders ignore it.

Question families (answers are short lowercase strings, suitable for exact match after
:func:`normalize_answer`):

* ``color``    -- one large shape (a side of half to four fifths of the image); answer is one of :data:`COLORS`.
* ``shape``    -- one large shape; answer is one of :data:`SHAPES`.
* ``position`` -- one shape lying entirely inside one image quadrant; answer is one of :data:`POSITIONS`.
* ``count``    -- 1 to 4 shapes of random type/colour, each nearly filling a different quadrant (the quadrants
  drawn at random); answer is ``"1"`` .. ``"4"``. With ``max_count`` 5 to 9: 1 to ``max_count`` small shapes, each
  in a different cell of a 3x3 grid.

Within each split the task mix is balanced across the requested tasks (or, for the training split, follows
``train_task_weights``) and the answers are balanced within each task (every answer occurs ``n // k`` or
``n // k + 1`` times), and the question paraphrase is drawn independently of the answer, so the question text never
reveals the answer. Shapes are drawn without anti-aliasing, so every
shape pixel has exactly its palette colour (handy for tests), and backgrounds are near-neutral greys that never
coincide with a palette colour. Generation is fully deterministic given the arguments: the same seed produces
byte-identical JSON files and PNG images.
"""

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
from PIL import Image, ImageDraw

from mmfw.data.answers import normalize_answer
from mmfw.errors import InvalidArgumentError

logger = logging.getLogger(__name__)

__all__ = [
    "COLORS",
    "COUNTS",
    "POSITIONS",
    "QUESTIONS",
    "SHAPES",
    "TASKS",
    "ShapeSpec",
    "SynthPaths",
    "ensure_synthetic_vqa",
    "generate_synthetic_vqa",
    "normalize_answer",
    "render_scene",
]

#: Bumped whenever the generator's output for given arguments changes (invalidates cached datasets).
GENERATOR_VERSION = 2

#: Well-separated palette colours (name -> RGB).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 230),
    "yellow": (240, 220, 20),
    "purple": (150, 40, 200),
    "orange": (250, 130, 0),
}

#: Shape types; all are visually distinct at 64 px (squares are axis-aligned, diamonds are rotated 45 degrees).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "diamond")

#: Quadrant answers of the ``position`` task.
POSITIONS: tuple[str, ...] = ("top left", "top right", "bottom left", "bottom right")

#: Answers of the ``count`` task.
COUNTS: tuple[str, ...] = ("1", "2", "3", "4")

TASKS: tuple[str, ...] = ("color", "shape", "position", "count")

#: Tasks that can be asked as extra questions about a one-shape training image (``extra_train_questions``).
EXTRA_QUESTION_TASKS: tuple[str, ...] = ("color", "shape", "position")

#: Question paraphrases per task. None of them depends on the answer.
QUESTIONS: dict[str, tuple[str, ...]] = {
    "color": (
        "What color is the shape?",
        "What is the color of the shape?",
        "Which color does the object in the image have?",
    ),
    "shape": (
        "What shape is in the image?",
        "What kind of shape is shown?",
        "Which shape do you see?",
    ),
    "position": (
        "Where is the shape?",
        "In which part of the image is the shape?",
        "Where is the shape located?",
    ),
    "count": (
        "How many shapes are there?",
        "How many shapes are in the image?",
        "Count the shapes in the image.",
    ),
}

_ANSWERS: dict[str, tuple[str, ...]] = {
    "color": tuple(COLORS),
    "shape": SHAPES,
    "position": POSITIONS,
    "count": COUNTS,
}

def _answers(task: str, max_count: int = 4) -> tuple[str, ...]:
    """The answers of ``task``; count scenes hold 1 to ``max_count`` shapes."""
    return tuple(str(i) for i in range(1, max_count + 1)) if task == "count" else _ANSWERS[task]


_COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
_MIN_IMAGE_SIZE = 32
_GRID = 3  # cells per side of the grid that holds the shapes of a count scene with more than 4
MAX_COUNT = _GRID * _GRID
_GAP = 2  # minimum free pixels between shapes / between a shape and a quadrant border
_PNG_COMPRESS_LEVEL = 1


@dataclass(frozen=True)
class SynthPaths:
    """Locations of a generated synthetic dataset."""

    root: Path
    train: Path
    eval: Path
    images: Path


@dataclass(frozen=True)
class ShapeSpec:
    """One shape: type, colour name and its integer bounding box ``[x0, x1) x [y0, y1)`` (square, side ``size``)."""

    shape: str
    color: str
    x0: int
    y0: int
    size: int

    @property
    def x1(self) -> int:
        return self.x0 + self.size

    @property
    def y1(self) -> int:
        return self.y0 + self.size


def _paths(out_dir: str | Path) -> SynthPaths:
    root = Path(out_dir)
    return SynthPaths(root=root, train=root / "train.json", eval=root / "eval.json", images=root / "images")


def render_scene(shapes: Sequence[ShapeSpec], background: tuple[int, int, int],
                 image_size: int | tuple[int, int]) -> Image.Image:
    """Draw ``shapes`` (without anti-aliasing) on a plain ``background`` and return an RGB image of side
    ``image_size`` (or ``(width, height)``).

    Every shape stays inside its bounding box ``[x0, x0 + size) x [y0, y0 + size)``.
    """
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    img = Image.new("RGB", size, background)
    draw = ImageDraw.Draw(img)
    for s in shapes:
        fill = COLORS[s.color]
        x0, y0, x1, y1 = s.x0, s.y0, s.x1 - 1, s.y1 - 1  # inclusive pixel coordinates
        if s.shape == "circle":
            draw.ellipse((x0, y0, x1, y1), fill=fill)
        elif s.shape == "square":
            draw.rectangle((x0, y0, x1, y1), fill=fill)
        elif s.shape == "triangle":
            draw.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
        elif s.shape == "diamond":
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
        else:
            raise ValueError(f"unknown shape {s.shape!r}")
    return img


def _background(rng: np.random.Generator) -> tuple[int, int, int]:
    """A near-neutral light or dark grey with a slight random tint (never equal to a palette colour)."""
    level = int(rng.integers(185, 251)) if rng.random() < 0.5 else int(rng.integers(10, 71))
    tint = rng.integers(-6, 7, size=3)
    r, g, b = (int(np.clip(level + t, 0, 255)) for t in tint)
    return (r, g, b)


def _balanced(rng: np.random.Generator, values: Sequence[str], n: int) -> list[str]:
    """``n`` values in which each value occurs ``n // k`` or ``n // k + 1`` times, shuffled.

    The values receiving the extra occurrences are chosen at random so no value is systematically favoured.
    """
    k = len(values)
    reps = n // k
    extra = [values[i] for i in rng.permutation(k)[: n - reps * k]]
    out = [v for v in values for _ in range(reps)] + extra
    return [out[i] for i in rng.permutation(n)]


def _weighted(rng: np.random.Generator, values: Sequence[str], weights: Sequence[float], n: int) -> list[str]:
    """``n`` values, value ``i`` occurring ``n * weights[i] / sum(weights)`` times (rounded by largest remainders),
    shuffled."""
    total = float(sum(weights))
    exact = [n * w / total for w in weights]
    counts = [int(x) for x in exact]
    by_remainder = sorted(range(len(values)), key=lambda i: (counts[i] - exact[i], i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    out = [v for v, c in zip(values, counts, strict=True) for _ in range(c)]
    return [out[i] for i in rng.permutation(n)]


@dataclass(frozen=True)
class _Canvas:
    """Image width and height, and the factor applied to every shape size (``shape_scale``)."""

    width: int
    height: int
    scale: float = 1.0

    @property
    def side(self) -> float:
        """The length shape sizes are relative to: the shorter side, scaled."""
        return min(self.width, self.height) * self.scale


def _canvas(image_size: int | _Canvas) -> _Canvas:
    return image_size if isinstance(image_size, _Canvas) else _Canvas(image_size, image_size)


def _single_shape(
    rng: np.random.Generator, image_size: int | _Canvas, shape: str, color: str, lo: float = 0.5, hi: float = 0.8
) -> ShapeSpec:
    c = _canvas(image_size)
    size = int(rng.integers(max(1, round(lo * c.side)), max(1, round(hi * c.side)) + 1))
    x0 = int(rng.integers(0, c.width - size + 1))
    y0 = int(rng.integers(0, c.height - size + 1))
    return ShapeSpec(shape, color, x0, y0, size)


def _quadrant_shape(rng: np.random.Generator, image_size: int | _Canvas, position: str, shape: str, color: str,
                    lo: float = 0.2, hi: float = 0.35) -> ShapeSpec:
    """A shape lying entirely inside the given quadrant, at least ``_GAP`` pixels away from the mid lines; its side
    is ``lo`` to ``hi`` of the (shorter, scaled) image side, at most what the quadrant holds."""
    c = _canvas(image_size)
    half_w, half_h = c.width // 2, c.height // 2
    max_size = min(half_w, half_h) - _GAP
    size = int(rng.integers(min(max_size, max(4, round(lo * c.side))), min(max_size, max(4, round(hi * c.side))) + 1))
    # Offsets inside the quadrant [0, half - _GAP - size]; the far side leaves a _GAP margin to the mid line.
    ox = int(rng.integers(0, half_w - _GAP - size + 1))
    oy = int(rng.integers(0, half_h - _GAP - size + 1))
    vertical, horizontal = position.split()
    x0 = ox if horizontal == "left" else c.width - half_w + _GAP + ox
    y0 = oy if vertical == "top" else c.height - half_h + _GAP + oy
    return ShapeSpec(shape, color, x0, y0, size)


def _rand_shape(rng: np.random.Generator) -> str:
    return SHAPES[int(rng.integers(len(SHAPES)))]


def _rand_color(rng: np.random.Generator) -> str:
    return _COLOR_NAMES[int(rng.integers(len(_COLOR_NAMES)))]


def _count_shapes(rng: np.random.Generator, image_size: int | _Canvas, n: int, max_count: int = 4) -> list[ShapeSpec]:
    """``n`` shapes with random type/colour: up to 4, each nearly filling a different quadrant (chosen at random);
    with ``max_count`` above 4, each inside a different cell (chosen at random) of a 3x3 grid."""
    if max_count <= len(POSITIONS):
        quadrants = [POSITIONS[int(q)] for q in rng.permutation(len(POSITIONS))[:n]]
        return [_quadrant_shape(rng, image_size, q, _rand_shape(rng), _rand_color(rng), lo=0.4, hi=0.5)
                for q in quadrants]
    c = _canvas(image_size)
    cell_w, cell_h = c.width // _GRID, c.height // _GRID
    room = min(cell_w, cell_h) - _GAP
    hi = max(4, min(room, round(room * c.scale)))
    shapes = []
    for cell in rng.permutation(_GRID * _GRID)[:n]:
        size = int(rng.integers(max(4, round(0.6 * hi)), hi + 1))
        # _GAP free pixels on the cell's far sides: shapes in neighbouring cells never touch
        x0 = int(cell) % _GRID * cell_w + int(rng.integers(0, cell_w - _GAP - size + 1))
        y0 = int(cell) // _GRID * cell_h + int(rng.integers(0, cell_h - _GAP - size + 1))
        shapes.append(ShapeSpec(_rand_shape(rng), _rand_color(rng), x0, y0, size))
    return shapes


def _make_scene(rng: np.random.Generator, task: str, answer: str, image_size: int | _Canvas,
                max_count: int = 4) -> list[ShapeSpec]:
    if task == "color":
        return [_single_shape(rng, image_size, _rand_shape(rng), answer)]
    if task == "shape":
        return [_single_shape(rng, image_size, answer, _rand_color(rng))]
    if task == "position":
        return [_quadrant_shape(rng, image_size, answer, _rand_shape(rng), _rand_color(rng))]
    if task == "count":
        return _count_shapes(rng, image_size, int(answer), max_count)
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


def _side(lo: int, hi: int, image_size: int, near: str, far: str) -> str | None:
    """``near`` / ``far`` when ``[lo, hi)`` lies in the first / second half of an axis, ``_GAP`` pixels clear of the
    mid line, else ``None``."""
    half = image_size // 2
    if hi <= half - _GAP:
        return near
    if lo >= image_size - half + _GAP:
        return far
    return None


def _quadrant_of(s: ShapeSpec, image_size: int | _Canvas) -> str | None:
    """The quadrant ``s`` lies entirely inside, at least ``_GAP`` pixels from the mid lines, else ``None``."""
    c = _canvas(image_size)
    horizontal = _side(s.x0, s.x1, c.width, "left", "right")
    vertical = _side(s.y0, s.y1, c.height, "top", "bottom")
    return f"{vertical} {horizontal}" if horizontal and vertical else None


def _scene_answers(s: ShapeSpec, image_size: int | _Canvas, tasks: Sequence[str]) -> dict[str, str]:
    """The questions of ``tasks`` that a one-shape scene answers unambiguously: colour, shape and, when the shape lies
    inside one quadrant, position."""
    out = {"color": s.color, "shape": s.shape}
    quadrant = _quadrant_of(s, image_size)
    if quadrant is not None:
        out["position"] = quadrant
    return {t: out[t] for t in tasks if t in out}


def _generate_split(
    split: str,
    n: int,
    rng: np.random.Generator,
    root: Path,
    image_size: int | _Canvas,
    tasks: Sequence[str],
    extra_questions: Sequence[str] = (),
    task_weights: dict[str, float] | None = None,
    max_count: int = 4,
) -> list[dict[str, Any]]:
    if task_weights:
        task_list = _weighted(rng, list(tasks), [task_weights.get(t, 1.0) for t in tasks], n)
    else:
        task_list = _balanced(rng, list(tasks), n)
    answers: dict[str, list[str]] = {
        t: _balanced(rng, _answers(t, max_count), sum(1 for x in task_list if x == t)) for t in dict.fromkeys(tasks)
    }
    cursor = dict.fromkeys(answers, 0)
    records: list[dict[str, Any]] = []
    for i, task in enumerate(task_list):
        answer = answers[task][cursor[task]]
        cursor[task] += 1
        question = QUESTIONS[task][int(rng.integers(len(QUESTIONS[task])))]
        background = _background(rng)
        shapes = _make_scene(rng, task, answer, image_size, max_count)
        rel = f"images/{split}_{i:06d}.png"
        c = _canvas(image_size)
        render_scene(shapes, background, (c.width, c.height)).save(root / rel, format="PNG", compress_level=_PNG_COMPRESS_LEVEL)
        turns = [(question, answer)]
        if extra_questions and task != "count":
            # The extra questions this single-shape scene answers, in random order after the balanced one.
            (shape,) = shapes
            others = [(t, a) for t, a in _scene_answers(shape, image_size, extra_questions).items() if t != task]
            for j in rng.permutation(len(others)):
                t, a = others[int(j)]
                turns.append((QUESTIONS[t][int(rng.integers(len(QUESTIONS[t])))], a))
        conversations = []
        for j, (q, a) in enumerate(turns):
            conversations.append({"from": "human", "value": f"<image>\n{q}" if j == 0 else q})
            conversations.append({"from": "gpt", "value": a})
        records.append({"id": f"{split}_{i:06d}", "image": rel, "task": task, "conversations": conversations})
    return records


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
    paths.images.mkdir(parents=True, exist_ok=True)
    meta_path = paths.root / "synth_meta.json"
    meta_path.unlink(missing_ok=True)  # invalidate first: an interrupted run must not look complete
    for stale in paths.images.glob("*.png"):
        if stale.name.startswith(("train_", "eval_")):
            stale.unlink()

    start = time.perf_counter()
    # Independent streams per split: eval content does not depend on num_train and vice versa.
    splits = {"train": (num_train, paths.train, 0), "eval": (num_eval, paths.eval, 1)}
    for split, (n, json_path, stream) in splits.items():
        rng = np.random.default_rng([int(seed), stream])
        train = split == "train"
        asked = [t for t in extra if t in tasks] if train else []
        records = _generate_split(split, n, rng, paths.root, canvas, tasks, asked, weights if train else None,
                                  max_count)
        _write_text_atomic(json_path, json.dumps(records, indent=1) + "\n")
    meta = _meta(num_train, num_eval, image_size, seed, tasks, extra, weights, width, shape_scale, max_count)
    _write_text_atomic(meta_path, json.dumps(meta, indent=2, sort_keys=True) + "\n")
    logger.info(
        "generated synthetic VQA in %s: %d train + %d eval images (%dpx, tasks=%s) in %.1fs",
        paths.root,
        num_train,
        num_eval,
        image_size,
        ",".join(tasks),
        time.perf_counter() - start,
    )
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
