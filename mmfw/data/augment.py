"""Train-time image augmentation (``data.augment``), deterministic per (seed, epoch, sample, image).

:class:`ImageAugmenter` is set on the *training* dataset only (``LlavaDataset.augment``); it transforms each PIL image
after loading and before the image strategy, with torchvision transforms v2. Every transform keeps the image's size
(the random crop is resized back to the image's own width and height), so the strategy's token count, and the
sequence length the samplers and truncation computed from image headers, never change.

The random draws come from a generator seeded with ``(seed, epoch, sample index, image index)`` (the global torch
RNG is forked around the call and left as it was): the same sample looks the same in a resumed run, in any
data-loading worker, and different from one epoch to the next.
"""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image

from mmfw.config.augment import ImageAugmentConfig

__all__ = ["ImageAugmenter", "augment_seed"]

_MOD = (1 << 63) - 1


def augment_seed(seed: int, epoch: int, sample: int, image: int) -> int:
    """The torch seed of one image's augmentation (a fixed mix of the four numbers)."""
    key = 0
    for part in (seed, epoch, sample, image):
        key = (key * 1_000_003 + int(part) + 0x9E3779B9) % _MOD
    return key


class ImageAugmenter:
    """``augmenter(image, sample, k)`` -> the k-th image of sample ``sample`` augmented for the current epoch."""

    def __init__(self, cfg: ImageAugmentConfig, seed: int) -> None:
        self.cfg, self.seed, self.epoch = cfg, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def transforms(self, size: tuple[int, int]) -> Any:
        """The torchvision v2 pipeline for an image of ``size`` (width, height)."""
        from torchvision.transforms import v2

        ops: list[Any] = []
        if (crop := self.cfg.random_resized_crop) is not None:
            ops.append(v2.RandomResizedCrop((size[1], size[0]), scale=crop.scale, ratio=crop.ratio, antialias=True))
        if (jitter := self.cfg.color_jitter) is not None:
            ops.append(v2.ColorJitter(brightness=jitter.brightness, contrast=jitter.contrast,
                                      saturation=jitter.saturation, hue=jitter.hue))
        if (rand := self.cfg.rand_augment) is not None:
            ops.append(v2.RandAugment(num_ops=rand.num_ops, magnitude=rand.magnitude,
                                      num_magnitude_bins=rand.num_magnitude_bins))
        return v2.Compose(ops)

    def __call__(self, image: Image.Image, sample: int, k: int = 0) -> Image.Image:
        pipeline = self.transforms(image.size)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(augment_seed(self.seed, self.epoch, sample, k))
            out = pipeline(image)
        if out.size != image.size:  # a transform that changes the size would change the token count
            raise RuntimeError(f"augmentation changed the image size {image.size} -> {out.size}")
        return out
