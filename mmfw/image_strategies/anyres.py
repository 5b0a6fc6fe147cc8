"""``anyres`` (LLaVA-NeXT): tile a high-resolution image on the best of a few grid resolutions, plus a base tile.

1. Pick the grid resolution ("pinpoint", ``[height, width]`` in pixels, a multiple of the encoder's native size) that
   keeps the most effective pixels and, on ties, wastes the fewest (:func:`select_best_resolution`).
2. Resize the image into it keeping the aspect ratio, centre it on a canvas of that size (``fill``), and cut the
   canvas into tiles of the native size, row-major.
3. Put the whole image squashed to the native size in front: ``pixel_values`` is ``(1 + tiles, 3, H, W)``.

Features are merged back per image (:meth:`AnyresStrategy.merge`): ``flat`` concatenates base and tile features;
``spatial-unpad`` re-assembles the tile features into the 2-D grid, crops the rows/columns that only cover padding
(:func:`unpad_shape`, transformers' ``unpad_image``), appends a learned ``image_newline`` row after each grid row and
puts the base-tile features in front. :meth:`AnyresStrategy.num_tokens` computes the same count without pixels; with
the defaults it equals what transformers' ``LlavaNextProcessor`` expands ``<image>`` to, and preprocessing matches
``LlavaNextImageProcessor`` (torchvision; ``backend: torch``, the default) and ``LlavaNextImageProcessorPil``
(``backend: pil``) pixel for pixel.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Literal

import torch
from PIL import Image
from pydantic import Field, field_validator
from torch import nn
from typing_extensions import Self

from mmfw.errors import ConfigError, ExportError
from mmfw.image_strategies.base import (
    ImageInput,
    ImageStrategy,
    PixelStrategyConfig,
    VisionGeometry,
    normalise_uint8,
    normalise_uint8_fused,
    paste_uint8,
    resize_uint8,
    uint8_pixels,
)
from mmfw.image_strategies.resize import RESAMPLE
from mmfw.interop import HFLlavaPart, image_processor_kwargs
from mmfw.registry import component

logger = logging.getLogger(__name__)

LLAVA_NEXT_GRID_SHAPES: tuple[tuple[int, int], ...] = ((1, 2), (2, 1), (2, 2), (3, 1), (1, 3))
"""LLaVA-NeXT's default layouts in tiles (rows, columns): ``[[336, 672], [672, 336], ...]`` for a 336 px encoder."""


class AnyresStrategyConfig(PixelStrategyConfig):
    type: Literal["anyres"] = "anyres"
    grid_pinpoints: list[tuple[int, int]] | None = None
    """Candidate resolutions ``[height, width]`` in pixels, each a multiple of the encoder's native size. Defaults to
    LLaVA-NeXT's 1x2, 2x1, 2x2, 3x1 and 1x3 tile layouts at the encoder's native size."""
    merge: Literal["flat", "spatial-unpad"] = "spatial-unpad"
    """``flat``: base + tile features concatenated. ``spatial-unpad``: tiles re-assembled in 2-D, padding removed, a
    learned newline row after each grid row (LLaVA-NeXT); needs a connector that keeps the spatial layout."""
    max_tiles: int | None = Field(None, ge=1)
    """Pinpoints needing more tiles than this (the base tile not counted) are not considered."""
    fill: Literal["black", "mean"] = "black"
    """Canvas colour around the resized image: ``black`` as LLaVA-NeXT and transformers, or the encoder's mean."""

    @classmethod
    def example(cls) -> Self:
        return cls()

    @field_validator("grid_pinpoints")
    @classmethod
    def _positive(cls, v: list[tuple[int, int]] | None) -> list[tuple[int, int]] | None:
        if v is not None:
            if not v:
                raise ValueError("needs at least one [height, width] pinpoint")
            for i, (h, w) in enumerate(v):
                if h <= 0 or w <= 0:
                    raise ValueError(f"[{i}] = [{h}, {w}]: sizes must be positive")
        return v


def select_best_resolution(size_hw: tuple[int, int], pinpoints: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The pinpoint ``(height, width)`` keeping the most effective pixels of an image of ``size_hw``, then the one
    wasting the fewest; the first such pinpoint on a full tie (same rule as transformers)."""
    h, w = size_hw
    best, best_effective, best_waste = None, -1, math.inf
    for ph, pw in pinpoints:
        scale = min(pw / w, ph / h)
        effective = min(int(w * scale) * int(h * scale), w * h)
        waste = ph * pw - effective
        if effective > best_effective or (effective == best_effective and waste < best_waste):
            best, best_effective, best_waste = (ph, pw), effective, waste
    assert best is not None
    return best


def fit_size(size_hw: tuple[int, int], target_hw: tuple[int, int]) -> tuple[int, int]:
    """``(height, width)`` of an image of ``size_hw`` resized into ``target_hw`` keeping its aspect ratio."""
    h, w = size_hw
    th, tw = target_hw
    scale_w, scale_h = tw / w, th / h
    if scale_w < scale_h:
        return min(math.ceil(h * scale_w), th), tw
    return th, min(math.ceil(w * scale_h), tw)


def unpad_shape(size_hw: tuple[int, int], grid_hw: tuple[int, int]) -> tuple[slice, slice]:
    """Rows and columns of a feature grid ``grid_hw`` that cover the image (not the padding) of original
    ``size_hw``; same arithmetic as transformers' ``unpad_image``."""
    h, w = size_hw
    gh, gw = grid_hw
    if w / h > gw / gh:
        new_h = int(round(h * (gw / w), 7))
        pad = (gh - new_h) // 2
        return slice(pad, gh - pad), slice(0, gw)
    new_w = int(round(w * (gh / h), 7))
    pad = (gw - new_w) // 2
    return slice(0, gh), slice(pad, gw - pad)


def _span(s: slice) -> int:
    return s.stop - s.start


@component("anyres", config=AnyresStrategyConfig)
class AnyresStrategy(ImageStrategy):
    """LLaVA-NeXT "anyres" tiling (see module docstring)."""

    cfg: AnyresStrategyConfig

    def __init__(self, cfg: AnyresStrategyConfig, geometry: VisionGeometry, hidden_size: int) -> None:
        super().__init__(cfg, geometry, hidden_size)
        th, tw = self.tile_size = geometry.spec.image_size
        if cfg.grid_pinpoints is None:
            pinpoints = [(r * th, c * tw) for r, c in LLAVA_NEXT_GRID_SHAPES]
        else:
            pinpoints = [tuple(p) for p in cfg.grid_pinpoints]
            for i, (h, w) in enumerate(pinpoints):
                if h % th or w % tw:
                    raise ConfigError([f"grid_pinpoints[{i}]: [{h}, {w}] is not a multiple of the encoder's "
                                       f"native size [{th}, {tw}] (the tile size)"])
        if cfg.max_tiles is not None:
            kept = [p for p in pinpoints if (p[0] // th) * (p[1] // tw) <= cfg.max_tiles]
            if not kept:
                raise ConfigError([f"max_tiles: {cfg.max_tiles} excludes every grid pinpoint {pinpoints}"])
            pinpoints = kept
        self.grid_pinpoints: list[tuple[int, int]] = pinpoints
        self.base_tokens = geometry.tile_tokens(th, tw)
        self.token_grid = geometry.tile_token_grid(th, tw)
        if cfg.merge == "spatial-unpad":
            if self.token_grid is None:
                raise ConfigError(["merge: 'spatial-unpad' needs a connector that keeps the spatial layout "
                                   "of the patches (Connector.output_grid); this one returns a fixed number of tokens "
                                   "without layout (e.g. a resampler). Use merge: flat"])
            self.image_newline = nn.Parameter(torch.randn(hidden_size) * hidden_size ** -0.5)

    @property
    def merges_per_image(self) -> bool:
        return True

    def probe_sizes(self) -> set[tuple[int, int]]:
        """The base sizes and every grid pinpoint (as width, height): the largest count is at one of them."""
        return super().probe_sizes() | {(int(pw), int(ph)) for ph, pw in self.grid_pinpoints}

    def best_resolution(self, size: tuple[int, int]) -> tuple[int, int]:
        """Chosen pinpoint ``(height, width)`` for an image of ``size`` (width, height)."""
        return select_best_resolution((size[1], size[0]), self.grid_pinpoints)

    def tile_layout(self, size: tuple[int, int]) -> tuple[int, int]:
        """Tiles (rows, columns) of an image of ``size`` (width, height), the base tile not counted."""
        h, w = self.best_resolution(size)
        return h // self.tile_size[0], w // self.tile_size[1]

    def num_tiles(self, size: tuple[int, int]) -> int:
        """Tiles of an image of ``size`` (width, height), the base tile included."""
        rows, cols = self.tile_layout(size)
        return 1 + rows * cols

    def _unpadded(self, size: tuple[int, int]) -> tuple[slice, slice, tuple[int, int]]:
        rows, cols = self.tile_layout(size)
        gh, gw = self.token_grid
        grid = (rows * gh, cols * gw)
        ys, xs = unpad_shape((size[1], size[0]), grid)
        return ys, xs, grid

    def num_tokens(self, size: tuple[int, int]) -> int:
        if self.cfg.merge == "flat":
            rows, cols = self.tile_layout(size)
            return self.base_tokens * (1 + rows * cols)
        ys, xs, _ = self._unpadded(size)
        return self.base_tokens + _span(ys) * (_span(xs) + 1)

    def preprocess(self, image: Image.Image) -> ImageInput:
        spec = self.geometry.spec
        image = image if image.mode == "RGB" else image.convert("RGB")
        w, h = image.size
        th, tw = self.tile_size
        best_h, best_w = select_best_resolution((h, w), self.grid_pinpoints)
        new_h, new_w = fit_size((h, w), (best_h, best_w))
        fill = (0, 0, 0) if self.cfg.fill == "black" else tuple(int(m * 255) for m in spec.mean)
        offset = ((best_h - new_h) // 2, (best_w - new_w) // 2)
        rows, cols = best_h // th, best_w // tw
        if self.cfg.backend == "torch":  # tiles are views of the canvas, written once into the float output
            pixels, mode = uint8_pixels(image), self.cfg.interpolation
            canvas = paste_uint8(resize_uint8(pixels, (new_h, new_w), mode), (best_h, best_w), fill, offset)
            out = torch.empty((1 + rows * cols, 3, th, tw), dtype=torch.float32)
            out[0].copy_(resize_uint8(pixels, (th, tw), mode))
            out[1:].view(rows, cols, 3, th, tw).copy_(canvas.reshape(3, rows, th, cols, tw).permute(1, 3, 0, 2, 4))
            return ImageInput(pixel_values=normalise_uint8_fused(out, spec.mean, spec.std), size=(w, h))
        resample = RESAMPLE[self.cfg.interpolation]
        pil_canvas = Image.new("RGB", (best_w, best_h), fill)
        pil_canvas.paste(image.resize((new_w, new_h), resample), offset[::-1])
        base, canvas = uint8_pixels(image.resize((tw, th), resample)), uint8_pixels(pil_canvas)
        tiles = torch.empty((1 + rows * cols, 3, th, tw), dtype=torch.uint8)  # 8-bit tiles, normalised at once
        tiles[0] = base
        tiles[1:].view(rows, cols, 3, th, tw).copy_(canvas.reshape(3, rows, th, cols, tw).permute(1, 3, 0, 2, 4))
        return ImageInput(pixel_values=normalise_uint8(tiles, spec.mean, spec.std), size=(w, h))

    def merge(self, tile_features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``(1 + tiles, T, D)`` -> ``(num_tokens(size), D)``. A lone base tile (the blank image of the text-only
        dummy pass) merges to its own features."""
        base, tiles = tile_features[0], tile_features[1:]
        if tiles.shape[0] == 0:
            return base
        rows, cols = self.tile_layout(size)
        if tiles.shape[0] != rows * cols:
            raise ValueError(f"image of size {size}: expected 1 + {rows}x{cols} tiles, got {tile_features.shape[0]}")
        d = tile_features.shape[-1]
        if self.cfg.merge == "flat":
            return torch.cat([base, tiles.reshape(-1, d)])
        gh, gw = self.token_grid
        ys, xs, (grid_h, grid_w) = self._unpadded(size)
        grid = tiles.view(rows, cols, gh, gw, d).permute(0, 2, 1, 3, 4).reshape(grid_h, grid_w, d)[ys, xs]
        newline = self.image_newline.to(grid.dtype).expand(grid.shape[0], 1, d)
        return torch.cat([base, torch.cat([grid, newline], dim=1).reshape(-1, d)])

    def hf_llava_export(self) -> HFLlavaPart:
        """transformers' LlavaNext: ``image_grid_pinpoints``, ``image_newline`` and ``LlavaNextImageProcessor``."""
        from transformers import LlavaNextImageProcessor


        if self.cfg.merge != "spatial-unpad":
            raise ExportError(f"merge {self.cfg.merge!r}: transformers' LlavaNext only merges 'spatial-unpad'")
        if self.cfg.fill != "black":
            raise ExportError(f"fill {self.cfg.fill!r}: LlavaNextImageProcessor pads with black")
        th, tw = self.tile_size
        if th != tw:
            raise ExportError(f"LlavaNext needs square tiles, not {th}x{tw}")
        pinpoints = [list(p) for p in self.grid_pinpoints]
        spec = self.geometry.spec
        processor = LlavaNextImageProcessor(
            size={"shortest_edge": th}, crop_size={"height": th, "width": tw}, image_grid_pinpoints=pinpoints,
            do_pad=True, **image_processor_kwargs(spec.mean, spec.std, self.cfg.interpolation))
        return HFLlavaPart(config={"image_grid_pinpoints": pinpoints},
                           weights={"model.image_newline": self.image_newline.detach()},
                           image_processor=processor, formats=("hf-llava-next",))
