"""Values that pass between components: dtypes, the encoder's :class:`VisionSpec`, the image :class:`VisionGeometry`
and the LLM's :class:`LLMGeometry`.

Below every component package (encoders, connectors, LLMs and image strategies import it, never each other), so a
component kind can describe what another needs without depending on it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

__all__ = ["DType", "LLMGeometry", "VisionGeometry", "VisionSpec", "torch_dtype"]

DType = Literal["float32", "bfloat16", "float16"]


def torch_dtype(name: str) -> torch.dtype:
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


@dataclass(frozen=True)
class VisionSpec:
    """What an image strategy needs to know about its encoder."""

    image_size: tuple[int, int]
    """Native input size (height, width)."""
    patch_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    embed_dim: int
    dynamic_size: bool = False
    """Whether inputs other than ``image_size`` are accepted (position embeddings interpolated)."""
    pad_to_patch: bool = False
    """Whether a size that is not a multiple of the patch size is padded up (else floored)."""

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """Patch grid (rows, columns) for an input of ``height`` x ``width`` pixels."""
        rnd = math.ceil if self.pad_to_patch else math.floor
        return rnd(height / self.patch_size), rnd(width / self.patch_size)


@dataclass(frozen=True)
class VisionGeometry:
    """How a tile of pixels becomes tokens: the encoder's patch grid and the connector's token count/layout."""

    spec: VisionSpec
    connector_tokens: Callable[[tuple[int, int]], int]
    connector_grid: Callable[[tuple[int, int]], tuple[int, int] | None]

    def tile_tokens(self, height: int, width: int) -> int:
        return self.connector_tokens(self.spec.grid(height, width))

    def tile_token_grid(self, height: int, width: int) -> tuple[int, int] | None:
        return self.connector_grid(self.spec.grid(height, width))


@dataclass(frozen=True)
class LLMGeometry:
    """What the rest of mmfw needs to know about an LLM before building it, and where each value comes from."""

    hidden_size: int
    max_positions: int | None
    """The longest sequence the LLM accepts (``None``: no limit known)."""
    max_positions_source: str
    """Where ``max_positions`` comes from, relative to the LLM's config (``"architecture.max_position_embeddings"``);
    the caller puts the YAML path in front."""
