"""Patch merger (Qwen2-VL's ``PatchMerger``, InternVL's pixel shuffle): each ``merge_size x merge_size`` block of
neighbouring patches becomes one token.

``LayerNorm(in_dim)`` on every patch, the block's features concatenated in row-major order
(``merge_size**2 * in_dim``), then an MLP: ``Linear(merge_size**2 * in_dim, hidden) -> GELU -> ... ->
Linear(hidden, out_dim)``. A 24x24 CLIP grid becomes 12x12 = 144 tokens with ``merge_size: 2``, without discarding
anything (the concatenation keeps every patch, unlike average pooling). Since the LLM usually costs more per token
than the vision encoder, this shortens sequences fourfold where it matters most.

The output keeps the spatial layout (``output_grid``), so it also works with anyres ``spatial-unpad``. A grid that is
not a multiple of ``merge_size`` is padded with zero features at the bottom and right.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F
from typing_extensions import Self

from mmfw.config.base import ConnectorConfig
from mmfw.connectors.base import Connector, pooled_grid
from mmfw.connectors.mlp import build_mlp
from mmfw.registry import component


class PatchMergerConfig(ConnectorConfig):
    type: Literal["patch-merger"] = "patch-merger"
    merge_size: int = Field(2, ge=1)
    """Side of the block of patches merged into one token (2: four patches per token)."""
    depth: int = Field(2, ge=1)
    """Number of Linear layers of the MLP after the merge (activation between them)."""
    hidden_size: int | None = Field(None, gt=0)
    """Width of the MLP's hidden layers; defaults to the merged width ``merge_size**2 * in_dim`` (Qwen2-VL)."""
    activation: Literal["gelu", "gelu_tanh", "relu", "silu"] = "gelu"
    """Activation between the MLP's layers."""
    norm: bool = True
    """LayerNorm on every patch before the merge (Qwen2-VL's ``ln_q``)."""
    norm_eps: float = Field(1e-6, gt=0)
    """Epsilon of the LayerNorm (Qwen2-VL's value)."""

    @classmethod
    def example(cls) -> Self:
        return cls()


@component("patch-merger", config=PatchMergerConfig)
class PatchMergerConnector(Connector):
    def __init__(self, cfg: PatchMergerConfig, in_dim: int, out_dim: int) -> None:
        super().__init__(cfg, in_dim, out_dim)
        merged = cfg.merge_size**2 * in_dim
        hidden = cfg.hidden_size or merged
        self.norm = nn.LayerNorm(in_dim, eps=cfg.norm_eps) if cfg.norm else nn.Identity()
        self.mlp = build_mlp([merged] + [hidden] * (cfg.depth - 1) + [out_dim], cfg.activation)

    def output_grid(self, grid: tuple[int, int]) -> tuple[int, int]:
        return pooled_grid(grid, self.cfg.merge_size)

    def num_tokens(self, grid: tuple[int, int]) -> int:
        rows, cols = self.output_grid(grid)
        return rows * cols

    def forward(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        self.check_grid(features, grid)
        n, _, dim = features.shape
        rows, cols = grid
        m = self.cfg.merge_size
        out_rows, out_cols = self.output_grid(grid)
        x = self.norm(features.to(self.mlp[0].weight.dtype)).reshape(n, rows, cols, dim)
        x = F.pad(x, (0, 0, 0, out_cols * m - cols, 0, out_rows * m - rows))
        # (n, R, m, C, m, d) -> (n, R, C, m, m, d): each block's patches, row-major, side by side
        x = x.reshape(n, out_rows, m, out_cols, m, dim).permute(0, 1, 3, 2, 4, 5)
        return self.mlp(x.reshape(n, out_rows * out_cols, m * m * dim))
