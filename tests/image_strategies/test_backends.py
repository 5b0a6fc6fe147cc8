"""The ``torch`` backend of ``pad``, ``resize`` and ``anyres`` (uint8 tensor ops) against the default ``pil`` backend
and against transformers' torchvision image processor, on a textured image whose aspect ratio needs padding."""

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


def make(name: str, backend: str):
    cls, cfg_cls = STRATEGIES[name]
    spec = VisionSpec(image_size=(TILE, TILE), patch_size=14, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD,
                      embed_dim=4)
    geometry = VisionGeometry(spec=spec, connector_tokens=lambda g: g[0] * g[1], connector_grid=lambda g: g)
    extra = {"merge": "flat"} if name == "anyres" else {}
    return cls(cfg_cls(backend=backend, **extra), geometry, 8)


def photo() -> Image.Image:
    y, x = np.mgrid[0:90, 0:150]
    rng = np.random.default_rng(0)
    rgb = np.stack([x * 1.7, y * 2.8, (x + y) * 1.1], axis=-1) + rng.normal(0, 12, (90, 150, 3))
    return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("name", list(STRATEGIES))
def test_torch_backend_is_within_two_levels_of_pil(name: str) -> None:
    image = photo()
    pil, fast = make(name, "pil").preprocess(image), make(name, "torch").preprocess(image)
    assert fast.size == pil.size == image.size and fast.pixel_values.shape == pil.pixel_values.shape
    diff = (fast.pixel_values - pil.pixel_values).abs()
    assert float(diff.max()) <= 2 * LEVEL + 1e-6
    assert float(diff.mean()) < 0.05 * LEVEL  # nearly every pixel identical


def test_torch_pad_matches_transformers_torchvision_processor() -> None:
    strategy = make("pad", "torch")
    processor = strategy.hf_llava_export().image_processor  # LlavaImageProcessor (torchvision backend)
    theirs = processor(photo(), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(strategy.preprocess(photo()).pixel_values, theirs, atol=1e-5, rtol=0)


def test_paste_equals_pils_expand_to_square() -> None:
    image = photo()
    fill = (122, 116, 104)
    side = max(image.size)
    ours = paste_uint8(uint8_pixels(image), (side, side), fill, ((side - image.height) // 2, 0))
    assert torch.equal(ours, uint8_pixels(expand_to_square(image, fill)))
