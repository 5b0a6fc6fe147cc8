"""Shapes of the synthetic scenes: the palette, the shape types, :class:`ShapeSpec` and :func:`render_scene`."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

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

_COLOR_NAMES: tuple[str, ...] = tuple(COLORS)


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
