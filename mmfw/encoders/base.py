"""The vision-encoder contract: pixels in, one feature row per patch out (prefix/CLS tokens already dropped)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from mmfw.config.base import VisionEncoderConfig

DType = Literal["float32", "bfloat16", "float16"]


def torch_dtype(name: str) -> torch.dtype:
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


class VisionEncoder(nn.Module, ABC):
    """Base class of vision encoders. ``forward`` returns ``(N, rows*cols, embed_dim)`` patch features."""

    registry_name: str
    config_class: type[VisionEncoderConfig]

    def __init__(self, cfg: VisionEncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg

    @property
    @abstractmethod
    def spec(self) -> VisionSpec: ...

    @property
    def embed_dim(self) -> int:
        return self.spec.embed_dim

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def export_config(self) -> VisionEncoderConfig:
        """A config that builds this encoder again, loading no weights (``mmfw export --format hf`` stores it; the
        weights come from the export). The default is the component's own config."""
        return self.cfg

    @abstractmethod
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor: ...

    def layer_groups(self) -> list[nn.Module]:
        """The encoder's transformer blocks in order (for "unfreeze the last N blocks" and checkpointing)."""
        return []
