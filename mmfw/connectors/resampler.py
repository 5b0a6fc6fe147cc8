"""Perceiver-style resampler (OmniLMM / MiniCPM-V): a fixed number of learned queries cross-attend to the patches.

One ``nn.MultiheadAttention`` layer: ``num_queries = g * g`` learnable queries (trunc-normal, std 0.02) plus a fixed
2-D sin-cos position embedding of the ``g x g`` query grid attend to the patch features, which are projected to the
LLM width (``kv_proj``: a bias-free Linear when the widths differ, else identity) and layer-normed. Keys carry a
position embedding of the patch grid; values do not. The result is layer-normed and multiplied by ``proj``
(initialised ``embed_dim**-0.5 * randn``). Every image becomes exactly ``num_queries`` tokens, whatever its grid.

Key positions (``key_pos_embed``):

* ``interpolate`` (default, the seed's ``get_abs_pos``): the query grid's sin-cos table, bicubically interpolated
  (``align_corners=False``) from ``g x g`` to the actual ``rows x cols`` patch grid, which may be non-square;
  unchanged when the grid is ``g x g``. Matches pretrained OmniLMM resamplers exactly.
* ``sincos``: the sin-cos table computed directly for the ``rows x cols`` grid (what later MiniCPM-V versions do);
  positions keep their spacing of one patch at any resolution.

Parameter and buffer names match the seed's ``Resampler`` (``query``, ``pos_embed``, ``kv_proj``, ``attn``,
``ln_q``, ``ln_kv``, ``ln_post``, ``proj``), so its weights load directly. ``pos_embed`` is a persistent buffer,
not a parameter: it is never trained, whatever the training policy.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field, field_validator
from torch import nn
from typing_extensions import Self

from mmfw.config.base import ConnectorConfig
from mmfw.connectors.base import Connector
from mmfw.registry import component


def sincos_1d(dim: int, pos: torch.Tensor) -> torch.Tensor:
    """``(M,)`` positions -> ``(M, dim)``: ``[sin(pos * w), cos(pos * w)]`` with ``w_i = 10000^(-2i/dim)``."""
    omega = torch.arange(dim // 2, dtype=torch.float64) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = pos.reshape(-1).to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_2d(dim: int, rows: int, cols: int) -> torch.Tensor:
    """MAE's 2-D sin-cos table for a ``rows x cols`` grid, row-major, ``(rows * cols, dim)`` float32.

    As in MAE / OmniLMM, the first half of the channels encodes the column and the second half the row.
    """
    if dim % 4:
        raise ValueError(f"2-D sin-cos position embedding needs a width divisible by 4, got {dim}")
    col, row = torch.meshgrid(torch.arange(cols, dtype=torch.float64), torch.arange(rows, dtype=torch.float64),
                              indexing="xy")
    return torch.cat([sincos_1d(dim // 2, col), sincos_1d(dim // 2, row)], dim=1).float()


def interpolate_pos_embed(table: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A square ``(g*g, D)`` table resized bicubically to ``grid`` (rows, cols) -> ``(rows*cols, D)``."""
    g = math.isqrt(table.shape[0])
    if (g, g) == tuple(grid):
        return table
    square = table.float().reshape(1, g, g, -1).permute(0, 3, 1, 2)
    out = F.interpolate(square, size=tuple(grid), mode="bicubic", align_corners=False)
    return out.permute(0, 2, 3, 1).flatten(0, 2).to(table.dtype)


class ResamplerConnectorConfig(ConnectorConfig):
    type: Literal["resampler"] = "resampler"
    num_queries: int = Field(64, gt=0)
    """Image tokens per image; must be a perfect square (the queries form a ``g x g`` grid)."""
    num_heads: int | None = Field(None, gt=0)
    """Attention heads; default ``max(1, embed_dim // 128)`` as OmniLMM. Must divide the LLM hidden size."""
    key_pos_embed: Literal["interpolate", "sincos"] = "interpolate"
    """Key positions: the query table interpolated bicubically to the patch grid (the seed), or a sin-cos table
    computed for the patch grid."""

    @field_validator("num_queries")
    @classmethod
    def _square(cls, v: int) -> int:
        if math.isqrt(v) ** 2 != v:
            raise ValueError(f"num_queries must be a perfect square (the queries form a g x g grid), got {v}")
        return v

    @classmethod
    def example(cls) -> Self:
        return cls(num_queries=4)


@component("resampler", config=ResamplerConnectorConfig)
class ResamplerConnector(Connector):
    def __init__(self, cfg: ResamplerConnectorConfig, in_dim: int, out_dim: int) -> None:
        super().__init__(cfg, in_dim, out_dim)
        embed_dim = out_dim
        num_heads = cfg.num_heads or max(1, embed_dim // 128)
        if embed_dim % num_heads:
            raise ValueError(f"resampler: num_heads {num_heads} does not divide the LLM hidden size {embed_dim}")
        if embed_dim % 4:
            raise ValueError(f"resampler: the LLM hidden size {embed_dim} must be divisible by 4 (2-D sin-cos)")
        self.grid_size = math.isqrt(cfg.num_queries)
        self.num_queries = cfg.num_queries
        self.embed_dim, self.num_heads = embed_dim, num_heads
        norm_layer = partial(nn.LayerNorm, eps=1e-6)

        self.register_buffer("pos_embed", sincos_2d(embed_dim, self.grid_size, self.grid_size), persistent=True)
        self.query = nn.Parameter(torch.zeros(self.num_queries, embed_dim))
        nn.init.trunc_normal_(self.query, std=0.02)
        self.kv_proj = nn.Linear(in_dim, embed_dim, bias=False) if in_dim != embed_dim else nn.Identity()
        self.attn = nn.MultiheadAttention(embed_dim, num_heads)
        self.ln_q = norm_layer(embed_dim)
        self.ln_kv = norm_layer(embed_dim)
        self.ln_post = norm_layer(embed_dim)
        self.proj = nn.Parameter(embed_dim**-0.5 * torch.randn(embed_dim, embed_dim))
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def num_tokens(self, grid: tuple[int, int]) -> int:
        return self.num_queries

    def output_grid(self, grid: tuple[int, int]) -> tuple[int, int]:
        return (self.grid_size, self.grid_size)

    def key_positions(self, grid: tuple[int, int]) -> torch.Tensor:
        """``(rows*cols, embed_dim)`` position embedding added to the keys of a ``grid`` of patches."""
        if self.cfg.key_pos_embed == "sincos":
            return sincos_2d(self.embed_dim, *grid).to(self.pos_embed)
        return interpolate_pos_embed(self.pos_embed, grid)

    def forward(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        if features.shape[1] != grid[0] * grid[1]:
            raise ValueError(f"resampler: {features.shape[1]} feature rows but the patch grid is {grid}")
        pos = self.key_positions(grid)
        x = self.kv_proj(features.to(self.query.dtype))
        x = self.ln_kv(x).permute(1, 0, 2)  # (L, N, D): MultiheadAttention is sequence-first
        n = x.shape[1]
        q = self.ln_q(self.query)
        out = self.attn(q.unsqueeze(1).expand(-1, n, -1) + self.pos_embed.unsqueeze(1),
                        x + pos.unsqueeze(1), x, need_weights=False)[0]
        x = self.ln_post(out.permute(1, 0, 2))
        return x @ self.proj
