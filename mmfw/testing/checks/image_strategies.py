"""Image-strategy contracts (alone): ``preprocess`` turns any RGB image into equal-size tiles of normalised pixels
the encoder accepts, and records the original size. The token count is checked on the whole model
(:mod:`mmfw.testing.checks.vlm`)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from mmfw.testing.core import ComponentUnderTest, contract

KIND = "image_strategies"
SIZES = [(45, 30), (30, 45), (32, 32), (200, 50), (7, 90)]
"""(width, height): non-square, square, very wide, very narrow."""


def random_image(size: tuple[int, int], seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


@contract(KIND, "preprocess")
def preprocess(cut: ComponentUnderTest) -> None:
    """``preprocess`` returns ``(tiles, 3, H, W)`` finite float tiles the encoder accepts, and the original
    (width, height)."""
    from mmfw.testing.checks.vlm import model

    vlm, _ = model(cut)
    strategy, spec = vlm.image_strategy, vlm.vision_encoder.spec
    for size in SIZES:
        image = cut.run(f"preprocess of a {size[0]}x{size[1]} image", lambda size=size: strategy.preprocess(
            random_image(size)), "preprocess must accept an RGB image of any size")
        px = image.pixel_values
        cut.require(isinstance(px, torch.Tensor) and px.ndim == 4 and px.shape[0] >= 1 and px.shape[1] == 3,
                    f"pixel_values of a {size[0]}x{size[1]} image have shape {tuple(getattr(px, 'shape', ()))}",
                    "return ImageInput(pixel_values=(tiles, 3, H, W), size)")
        cut.require(px.is_floating_point() and torch.isfinite(px).all(), "pixel_values are not finite floats",
                    "normalise with the encoder's mean and std (mmfw.image_strategies.base.to_tensor)")
        cut.require(tuple(image.size) == size, f"ImageInput.size is {tuple(image.size)} for a {size} image",
                    "size is the original (width, height): num_tokens and merge are computed from it")
        if not spec.dynamic_size:
            cut.require(tuple(px.shape[-2:]) == tuple(spec.image_size),
                        f"tiles of {tuple(px.shape[-2:])} pixels for a fixed-size encoder of {spec.image_size}",
                        "tiles must have the encoder's native size unless spec.dynamic_size")
