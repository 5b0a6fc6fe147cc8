"""Scenes of the synthetic tasks: where each task's shapes go (one large shape, one per quadrant, one per cell of a
3x3 grid), the background, and what a one-shape scene answers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mmfw.data.synth.shapes import _COLOR_NAMES, POSITIONS, SHAPES, ShapeSpec

#: The task families, each with its own kind of scene.
TASKS: tuple[str, ...] = ("color", "shape", "position", "count")

_GRID = 3  # cells per side of the grid that holds the shapes of a count scene with more than 4
MAX_COUNT = _GRID * _GRID
_GAP = 2  # minimum free pixels between shapes / between a shape and a quadrant border


def _background(rng: np.random.Generator) -> tuple[int, int, int]:
    """A near-neutral light or dark grey with a slight random tint (never equal to a palette colour)."""
    level = int(rng.integers(185, 251)) if rng.random() < 0.5 else int(rng.integers(10, 71))
    tint = rng.integers(-6, 7, size=3)
    r, g, b = (int(np.clip(level + t, 0, 255)) for t in tint)
    return (r, g, b)


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
