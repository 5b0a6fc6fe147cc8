"""The vision-encoder contract: pixels in, one feature row per patch out (prefix/CLS tokens already dropped)."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import nn

from mmfw.config.base import VisionEncoderConfig
from mmfw.contract import ComponentContract
from mmfw.specs import DType, VisionSpec, torch_dtype

__all__ = ["DType", "VisionEncoder", "VisionSpec", "torch_dtype"]


class VisionEncoder(ComponentContract, nn.Module, ABC):
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

    @abstractmethod
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor: ...

    def layer_groups(self) -> list[nn.Module]:
        """The encoder's transformer blocks in order (for "unfreeze the last N blocks" and checkpointing)."""
        return []
