"""The ``torch`` backend (the default) of ``pad``, ``resize`` and ``anyres`` (uint8 tensor ops) against transformers'
torchvision image processors and against the ``pil`` backend, on textured images whose aspect ratios need padding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from mmfw.encoders.base import VisionSpec
from mmfw.encoders.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from mmfw.image_strategies.anyres import AnyresStrategy, AnyresStrategyConfig
from mmfw.image_strategies.base import VisionGeometry, paste_uint8, uint8_pixels
from mmfw.image_strategies.pad import PadStrategy, PadStrategyConfig, expand_to_square
from mmfw.image_strategies.resize import ResizeStrategy, ResizeStrategyConfig

TILE = 56
LEVEL = 1 / 255 / min(OPENAI_CLIP_STD)  # one 8-bit level after normalisation

STRATEGIES = {"pad": (PadStrategy, PadStrategyConfig), "resize": (ResizeStrategy, ResizeStrategyConfig),
              "anyres": (AnyresStrategy, AnyresStrategyConfig)}


def make(name: str, backend: str | None, merge: str = "flat"):
    cls, cfg_cls = STRATEGIES[name]
    spec = VisionSpec(image_size=(TILE, TILE), patch_size=14, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD,
                      embed_dim=4)
    geometry = VisionGeometry(spec=spec, connector_tokens=lambda g: g[0] * g[1], connector_grid=lambda g: g)
    extra = ({"merge": merge} if name == "anyres" else {}) | ({"backend": backend} if backend else {})
    return cls(cfg_cls(**extra), geometry, 8)


def photo(height: int = 90, width: int = 150) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width]
    rng = np.random.default_rng(0)
    rgb = np.stack([x * 1.7, y * 2.8, (x + y) * 1.1], axis=-1) + rng.normal(0, 12, (height, width, 3))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_torch_backend_is_within_two_levels_of_pil(name: str) -> None:
    image = photo()
    pil, fast = make(name, "pil").preprocess(image), make(name, "torch").preprocess(image)
    assert fast.size == pil.size == image.size and fast.pixel_values.shape == pil.pixel_values.shape
    diff = (fast.pixel_values - pil.pixel_values).abs()
    assert float(diff.max()) <= 2 * LEVEL + 1e-6
    assert float(diff.mean()) < 0.05 * LEVEL  # nearly every pixel identical


@pytest.mark.parametrize("size", [(90, 150), (150, 90), (56, 56), (31, 200)])
@pytest.mark.parametrize("name", list(STRATEGIES))
def test_torch_backend_equals_transformers_torchvision_processor(name: str, size: tuple[int, int]) -> None:
    strategy = make(name, None, merge="spatial-unpad")  # the default backend; LlavaNext exports spatial-unpad only
    assert strategy.cfg.backend == "torch"
    processor = strategy.hf_llava_export().image_processor  # the torchvision processor an export loads by default
    image = photo(*size)
    ours = strategy.preprocess(image).pixel_values
    theirs = processor(image, return_tensors="pt")["pixel_values"]
    theirs = theirs[0, :ours.shape[0]] if theirs.dim() == 5 else theirs  # LlavaNext: (images, tiles padded, ...)
    assert ours.shape == theirs.shape and torch.equal(ours, theirs)  # bit for bit


def test_paste_equals_pils_expand_to_square() -> None:
    image = photo()
    fill = (122, 116, 104)
    side = max(image.size)
    ours = paste_uint8(uint8_pixels(image), (side, side), fill, ((side - image.height) // 2, 0))
    assert torch.equal(ours, uint8_pixels(expand_to_square(image, fill)))
    tall = photo(150, 90)  # margins left and right
    ours = paste_uint8(uint8_pixels(tall), (side, side), fill, (0, (side - tall.width) // 2))
    assert torch.equal(ours, uint8_pixels(expand_to_square(tall, fill)))
    placed = paste_uint8(uint8_pixels(tall), (160, 100), fill, (4, 6))  # margins on all four sides
    assert torch.equal(placed[:, 4:154, 6:96], uint8_pixels(tall))
    assert all(torch.equal(placed[:, y, x], torch.tensor(fill, dtype=torch.uint8)) for y, x in
               ((0, 0), (3, 50), (154, 50), (159, 99), (80, 5), (80, 96)))
