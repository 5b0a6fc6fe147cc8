"""The image-strategy contract: PIL image -> tiles of pixels, and tile features -> the image's token rows.

A strategy is the single source of truth for how many tokens an image becomes: :meth:`ImageStrategy.num_tokens`
is what the data pipeline expands ``<image>`` to, and :meth:`ImageStrategy.merge` returns exactly that many rows
(the fusion layer checks it).
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import nn

from mmfw.config.base import ImageStrategyConfig
from mmfw.contract import ComponentContract
from mmfw.specs import VisionGeometry, VisionSpec

__all__ = ["ImageInput", "ImageStrategy", "VisionGeometry", "VisionSpec", "normalise_uint8", "paste_uint8", "resize_uint8",
           "to_tensor", "uint8_pixels"]


class PixelStrategyConfig(ImageStrategyConfig):
    """Fields shared by the strategies that resize pixels (``resize``, ``pad``, ``anyres``)."""

    interpolation: Literal["bicubic", "bilinear", "nearest"] = "bicubic"
    backend: Literal["torch", "pil"] = "torch"
    """``torch`` (the default): the 8-bit pixels are padded, resized and tiled as uint8 tensors with torch's
    antialiased filters and normalised with their arithmetic, as transformers' torchvision ("fast") image processors
    do, the default processors of transformers 5 and of exported checkpoints (the same pixel values, bit for bit);
    about 2x faster than ``pil``. ``pil``:
    Pillow resizes, pixels equal to transformers' PIL image processors and the original LLaVA code (at most two levels
    from ``torch``, in well under 1 % of the pixels)."""


@dataclass
class ImageInput:
    """One preprocessed image: ``pixel_values`` is ``(tiles, 3, H, W)``; ``size`` the original (width, height)."""

    pixel_values: torch.Tensor
    size: tuple[int, int]


@functools.lru_cache(maxsize=32)
def _normalise_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    """``(3, 256)`` float32: ``(v / 255 - mean[c]) / std[c]`` for every 8-bit value ``v``, computed with the same
    float32 operations as normalising each pixel, so looking a pixel up gives bit-identical values."""
    values = np.arange(256, dtype=np.float32) / np.float32(255)
    m = np.asarray(mean, dtype=np.float32).reshape(3, 1)
    s = np.asarray(std, dtype=np.float32).reshape(3, 1)
    table = (values[None, :] - m) / s
    table.setflags(write=False)
    return table


def normalise_uint8(pixels: np.ndarray | torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """``(..., 3, H, W)`` uint8 pixels (any strides) -> normalised float32 of the same shape, contiguous: each 8-bit
    value is looked up in a 256-entry table per channel (one pass over each uint8 plane, no float intermediates)."""
    planes = pixels.numpy() if isinstance(pixels, torch.Tensor) else pixels
    table = _normalise_table(tuple(mean), tuple(std))
    out = np.empty(planes.shape, dtype=np.float32)
    for index in np.ndindex(*planes.shape[:-2]):  # one contiguous output plane at a time (the fastest np.take)
        np.take(table[index[-1]], planes[index], out=out[index], mode="clip")  # uint8 never leaves [0, 255]
    return torch.from_numpy(out)


@functools.lru_cache(maxsize=32)
def _mean_std_255(mean: tuple[float, ...], std: tuple[float, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """``mean`` and ``std`` on the 0-255 scale, ``(3, 1, 1)`` float32, computed as transformers' torchvision
    processors fuse rescaling into normalisation (``torch.tensor(mean) * (1.0 / (1 / 255))``)."""
    scale = 1.0 / (1 / 255)
    return (torch.tensor(mean) * scale).view(-1, 1, 1), (torch.tensor(std) * scale).view(-1, 1, 1)


def normalise_uint8_fused(pixels: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """``(..., 3, H, W)`` uint8 (or float32 holding 0-255 values, normalised in place) -> contiguous float32
    ``(pixels - 255 mean) / (255 std)``: the arithmetic of transformers' torchvision image processors, which the
    ``torch`` backend matches."""
    m, s = _mean_std_255(tuple(mean), tuple(std))
    if pixels.dtype != torch.float32:
        pixels = pixels.to(torch.float32, memory_format=torch.contiguous_format)
    return pixels.sub_(m).div_(s)


def to_tensor(image: Image.Image, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """RGB PIL image -> normalised float tensor ``(3, H, W)``: ``(pixel / 255 - mean) / std`` per channel.

    Through :func:`normalise_uint8`: 6-7x faster than normalising in float at 336 px, same values bit for bit. This
    runs in the data-loading worker for every image."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    return normalise_uint8(np.stack([np.asarray(plane) for plane in image.split()]), mean, std)


def uint8_pixels(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> ``(3, H, W)`` uint8 tensor in channels-last memory (the layout torch resizes fastest)."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    return torch.from_numpy(np.array(image)).permute(2, 0, 1)


_TORCH_MODES = {"bicubic": ("bicubic", True), "bilinear": ("bilinear", True), "nearest": ("nearest-exact", False)}


def resize_uint8(pixels: torch.Tensor, size_hw: tuple[int, int], interpolation: str) -> torch.Tensor:
    """``(3, H, W)`` uint8 -> ``(3, h, w)`` uint8 with torch's antialiased resize (as Pillow's filters: at most two
    levels apart from ``Image.resize``, in well under 1 % of the pixels)."""
    if tuple(pixels.shape[-2:]) == tuple(size_hw):
        return pixels
    mode, antialias = _TORCH_MODES[interpolation]
    return torch.nn.functional.interpolate(pixels[None], size=tuple(size_hw), mode=mode, antialias=antialias)[0]


def paste_uint8(pixels: torch.Tensor, canvas_hw: tuple[int, int], fill: tuple[int, int, int],
                offset_yx: tuple[int, int]) -> torch.Tensor:
    """``pixels`` (3, h, w) placed at ``offset_yx`` on a canvas of ``canvas_hw`` filled with ``fill`` (channels-last
    memory); only the margins are filled, and an image that covers the canvas is returned as it is."""
    (ch, cw), (y, x) = canvas_hw, offset_yx
    h, w = pixels.shape[-2:]
    if (h, w) == (ch, cw):
        return pixels
    canvas = torch.empty((ch, cw, 3), dtype=torch.uint8)
    colour = torch.tensor(fill, dtype=torch.uint8)
    canvas[:y] = colour
    canvas[y + h:] = colour
    canvas[y:y + h, :x] = colour
    canvas[y:y + h, x + w:] = colour
    canvas[y:y + h, x:x + w] = pixels.permute(1, 2, 0)
    return canvas.permute(2, 0, 1)


class ImageStrategy(ComponentContract, nn.Module, ABC):
    """Base class of image strategies (an ``nn.Module`` so a strategy may own parameters, e.g. a newline row)."""

    registry_name: str
    config_class: type[ImageStrategyConfig]

    def __init__(self, cfg: ImageStrategyConfig, geometry: VisionGeometry, hidden_size: int) -> None:
        super().__init__()
        self.cfg, self.geometry, self.hidden_size = cfg, geometry, hidden_size

    @abstractmethod
    def preprocess(self, image: Image.Image) -> ImageInput:
        """Turn an RGB image into tiles, all of the same size."""

    @abstractmethod
    def num_tokens(self, size: tuple[int, int]) -> int:
        """Tokens an image of original ``size`` (width, height) becomes."""

    def probe_sizes(self) -> set[tuple[int, int]]:
        """Image sizes (width, height) over which :meth:`max_tokens` takes the largest count: the encoder's native
        size and a few aspect ratios at 4x its area. Strategies with sizes of their own (anyres pinpoints) add them."""
        h, w = self.geometry.spec.image_size
        return {(w, h), (4 * w, 4 * h), (8 * w, 2 * h), (2 * w, 8 * h), (12 * w, 3 * h), (3 * w, 12 * h)}

    def max_tokens(self) -> int:
        """The most tokens any image becomes (what validation compares with ``data.max_length`` and the LLM's
        context): the largest :meth:`num_tokens` over :meth:`probe_sizes`. Exact for fixed-size strategies and
        anyres."""
        return max(int(self.num_tokens(s)) for s in sorted(self.probe_sizes()))

    def merge(self, tile_features: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """``(tiles, tokens_per_tile, D)`` features of one image -> ``(num_tokens(size), D)`` rows, in order."""
        return tile_features.reshape(-1, tile_features.shape[-1])

    @property
    def merges_per_image(self) -> bool:
        """True when :meth:`merge` must see each image on its own (else all images are merged in one reshape)."""
        return False
