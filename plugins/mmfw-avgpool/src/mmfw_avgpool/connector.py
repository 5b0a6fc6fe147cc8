"""``avgpool-mlp``: average-pool the patch grid by ``stride`` (LLaVA-NeXT/OneVision style), then an MLP.

A ``stride`` of 2 turns a 24x24 CLIP grid into 12x12 = 144 tokens. The pooled grid is kept (``output_grid``), so it
also works with anyres ``spatial-unpad``. Grids that are not multiples of the stride are pooled with ``ceil_mode``.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch.nn import functional as F

from mmfw.config.base import ConnectorConfig
from mmfw.connectors.base import Connector, pooled_grid
from mmfw.connectors.mlp import build_mlp
from mmfw.registry import component


class AvgPoolConnectorConfig(ConnectorConfig):
    type: Literal["avgpool-mlp"] = "avgpool-mlp"
    stride: int = Field(2, ge=1)
    depth: int = Field(2, ge=1)

    @classmethod
    def example(cls, **_: object) -> AvgPoolConnectorConfig:
        return cls(stride=2, depth=2)


@component("avgpool-mlp", config=AvgPoolConnectorConfig)
class AvgPoolConnector(Connector):
    def __init__(self, cfg: AvgPoolConnectorConfig, in_dim: int, out_dim: int) -> None:
        super().__init__(cfg, in_dim, out_dim)
        self.mlp = build_mlp([in_dim] + [out_dim] * cfg.depth, "gelu")

    def output_grid(self, grid: tuple[int, int]) -> tuple[int, int]:
        return pooled_grid(grid, self.cfg.stride)

    def num_tokens(self, grid: tuple[int, int]) -> int:
        rows, cols = self.output_grid(grid)
        return rows * cols

    def forward(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        self.check_grid(features, grid)
        n, _, dim = features.shape
        rows, cols = grid
        x = features.transpose(1, 2).reshape(n, dim, rows, cols)
        s = self.cfg.stride
        x = F.avg_pool2d(x, kernel_size=s, stride=s, ceil_mode=True, count_include_pad=False)
        x = x.flatten(2).transpose(1, 2)
        return self.mlp(x.to(self.mlp[0].weight.dtype))
