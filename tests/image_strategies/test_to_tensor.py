"""``to_tensor``: channel-first float32 pixels, normalised per channel as ``(pixel / 255 - mean) / std``."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from mmfw.image_strategies.base import to_tensor


def test_normalises_each_channel() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(5, 7, 3), dtype=np.uint8)
    mean, std = (0.1, 0.5, 0.9), (0.2, 0.3, 0.4)
    out = to_tensor(Image.fromarray(pixels), mean, std)
    assert out.shape == (3, 5, 7) and out.dtype == torch.float32 and out.is_contiguous()
    for c in range(3):
        expected = (pixels[:, :, c].astype(np.float64) / 255 - mean[c]) / std[c]
        np.testing.assert_allclose(out[c].numpy(), expected, rtol=0, atol=1e-6)


def test_converts_to_rgb_first() -> None:
    out = to_tensor(Image.new("L", (4, 3), 51), (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    assert out.shape == (3, 3, 4)
    torch.testing.assert_close(out, torch.full((3, 3, 4), 0.2))


def test_same_values_bit_for_bit_as_normalising_in_float32() -> None:
    """The lookup table gives exactly what ``(pixel / 255 - mean) / std`` in float32 gives (every 8-bit value)."""
    pixels = np.arange(256 * 3, dtype=np.int64).reshape(16, 16, 3) % 256
    pixels = pixels.astype(np.uint8)
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    arr = pixels.astype(np.float32).transpose(2, 0, 1) / np.float32(255)
    expected = (arr - np.asarray(mean, np.float32).reshape(3, 1, 1)) / np.asarray(std, np.float32).reshape(3, 1, 1)
    assert torch.equal(to_tensor(Image.fromarray(pixels), mean, std), torch.from_numpy(expected))
