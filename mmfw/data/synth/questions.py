"""Questions and records of the synthetic tasks: the task families, their paraphrases and answers, balanced (or
weighted) task and answer mixes, and one split's LLaVA records with their images."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mmfw.data.synth.scenes import _background, _Canvas, _canvas, _make_scene, _scene_answers
from mmfw.data.synth.shapes import COLORS, POSITIONS, SHAPES, render_scene

_PNG_COMPRESS_LEVEL = 1

#: Answers of the ``count`` task.
COUNTS: tuple[str, ...] = ("1", "2", "3", "4")

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
