"""The connector contract: vision features ``(N, L, in_dim)`` -> LLM-space tokens ``(N, T, out_dim)``."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import nn

from mmfw.config.base import ConnectorConfig
from mmfw.contract import ComponentContract


def pooled_grid(grid: tuple[int, int], factor: int) -> tuple[int, int]:
    """The grid after merging or pooling ``factor x factor`` blocks, a partial block at the bottom/right counting as
    one."""
    return math.ceil(grid[0] / factor), math.ceil(grid[1] / factor)


class Connector(ComponentContract, nn.Module, ABC):
    """Base class of connectors.

    ``grid`` is the (rows, cols) patch grid the features come from. A connector that keeps the spatial layout returns
    that layout from :meth:`output_grid` (anyres ``spatial-unpad`` needs it); one with a fixed token count returns
    ``None``.
    """

    registry_name: str
    config_class: type[ConnectorConfig]

    def __init__(self, cfg: ConnectorConfig, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.cfg, self.in_dim, self.out_dim = cfg, in_dim, out_dim

    @abstractmethod
    def num_tokens(self, grid: tuple[int, int]) -> int:
        """Output tokens per image for a patch grid."""

    def output_grid(self, grid: tuple[int, int]) -> tuple[int, int] | None:
        """Spatial layout of the output tokens, or ``None`` if they have none."""
        return None

    @abstractmethod
    def forward(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor: ...

    def check_grid(self, features: torch.Tensor, grid: tuple[int, int]) -> None:
        """Raise ``ValueError`` unless ``features`` ``(N, L, D)`` hold exactly one row per patch of ``grid``."""
        if features.shape[1] != grid[0] * grid[1]:
            raise ValueError(f"{self.registry_name}: {features.shape[1]} features do not form a "
                             f"{grid[0]}x{grid[1]} grid")
