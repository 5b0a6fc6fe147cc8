"""Linear connector (LLaVA's ``linear`` projector): one ``Linear(in_dim, out_dim)`` per patch."""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn
from typing_extensions import Self

from mmfw.config.base import ConnectorConfig
from mmfw.connectors.base import Connector
from mmfw.registry import component


class LinearConnectorConfig(ConnectorConfig):
    type: Literal["linear"] = "linear"
    bias: bool = True
    """Whether the Linear layer has a bias (LLaVA's has one)."""

    @classmethod
    def example(cls) -> Self:
        return cls()


@component("linear", config=LinearConnectorConfig)
class LinearConnector(Connector):
    def __init__(self, cfg: LinearConnectorConfig, in_dim: int, out_dim: int) -> None:
        super().__init__(cfg, in_dim, out_dim)
        self.proj = nn.Linear(in_dim, out_dim, bias=cfg.bias)

    def num_tokens(self, grid: tuple[int, int]) -> int:
        return grid[0] * grid[1]

    def output_grid(self, grid: tuple[int, int]) -> tuple[int, int]:
        return grid

    def forward(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return self.proj(features.to(self.proj.weight.dtype))
