"""The resampler against a direct transcription of the seed's (OmniLMM / MiniCPM-V) code, plus its own rules."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError
from torch import nn

from mmfw.connectors.resampler import ResamplerConnector, ResamplerConnectorConfig, sincos_2d


# --- the seed's math, transcribed (numpy sin-cos tables as in MAE, get_abs_pos, Resampler.forward) -------------------
def get_1d_sincos_pos_embed_from_grid(embed_dim: int, pos: np.ndarray) -> np.ndarray:
    omega = np.arange(embed_dim // 2, dtype=np.float32)
    omega /= embed_dim / 2.0
    omega = 1.0 / 10000**omega
    out = np.einsum("m,d->md", pos.reshape(-1), omega)
    return np.concatenate([np.sin(out), np.cos(out)], axis=1)


def get_2d_sincos_pos_embed(embed_dim: int, grid_size: int | tuple[int, int]) -> np.ndarray:
    rows, cols = (grid_size, grid_size) if isinstance(grid_size, int) else grid_size
    grid = np.meshgrid(np.arange(cols, dtype=np.float32), np.arange(rows, dtype=np.float32))  # w goes first
    grid = np.stack(grid, axis=0).reshape([2, 1, rows, cols])
    emb_h = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[0])
    emb_w = get_1d_sincos_pos_embed_from_grid(embed_dim // 2, grid[1])
    return np.concatenate([emb_h, emb_w], axis=1)


def get_abs_pos(abs_pos: torch.Tensor, tgt_size: int) -> torch.Tensor:
    src_size = int(math.sqrt(abs_pos.size(0)))
    tgt_size = int(math.sqrt(tgt_size))
    if src_size != tgt_size:
        return F.interpolate(abs_pos.float().reshape(1, src_size, src_size, -1).permute(0, 3, 1, 2),
                             size=(tgt_size, tgt_size), mode="bicubic", align_corners=False,
                             ).permute(0, 2, 3, 1).flatten(0, 2).to(dtype=abs_pos.dtype)
    return abs_pos


class SeedResampler(nn.Module):
    def __init__(self, grid_size: int, embed_dim: int, num_heads: int, kv_dim: int | None = None) -> None:
        super().__init__()
        norm_layer = partial(nn.LayerNorm, eps=1e-6)
        self.num_queries = grid_size**2
        self.pos_embed = nn.Parameter(torch.from_numpy(get_2d_sincos_pos_embed(embed_dim, grid_size)).float()
                                      ).requires_grad_(False)
        self.query = nn.Parameter(torch.zeros(self.num_queries, embed_dim))
        self.kv_proj = nn.Linear(kv_dim, embed_dim, bias=False) if kv_dim not in (None, embed_dim) else nn.Identity()
        self.attn = nn.MultiheadAttention(embed_dim, num_heads)
        self.ln_q, self.ln_kv, self.ln_post = norm_layer(embed_dim), norm_layer(embed_dim), norm_layer(embed_dim)
        self.proj = nn.Parameter((embed_dim**-0.5) * torch.randn(embed_dim, embed_dim))

    def forward(self, x: torch.Tensor, pos_embed: torch.Tensor | None = None) -> torch.Tensor:
        pos_embed = get_abs_pos(self.pos_embed, x.size(1)) if pos_embed is None else pos_embed
        x = self.kv_proj(x)
        x = self.ln_kv(x).permute(1, 0, 2)
        n = x.shape[1]
        q = self.ln_q(self.query)
        out = self.attn(q.unsqueeze(1).repeat(1, n, 1) + self.pos_embed.unsqueeze(1), x + pos_embed.unsqueeze(1),
                        x)[0]
        x = self.ln_post(out.permute(1, 0, 2))
        return x @ self.proj


# ---------------------------------------------------------------------------------------------------------------------
def pair(kv_dim: int = 24, embed_dim: int = 32, num_queries: int = 9, **cfg) -> tuple[ResamplerConnector, SeedResampler]:
    torch.manual_seed(0)
    ours = ResamplerConnector(ResamplerConnectorConfig(num_queries=num_queries, **cfg), in_dim=kv_dim,
                              out_dim=embed_dim)
    seed = SeedResampler(math.isqrt(num_queries), embed_dim, ours.num_heads, kv_dim)
    seed.load_state_dict(ours.state_dict(), strict=True)  # same parameter names as the seed
    for m in (ours, seed):
        m.eval()
    return ours, seed


@pytest.mark.parametrize("kv_dim", [24, 32], ids=["kv_proj", "no_kv_proj"])
@pytest.mark.parametrize("grid", [(3, 3), (5, 5), (2, 2)], ids=str)
def test_matches_the_seed_on_square_grids(kv_dim: int, grid: tuple[int, int]) -> None:
    ours, seed = pair(kv_dim=kv_dim)
    x = torch.randn(2, grid[0] * grid[1], kv_dim)
    torch.testing.assert_close(ours(x, grid), seed(x), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("grid", [(2, 5), (6, 4), (1, 3)], ids=str)
def test_non_square_grids_interpolate_the_query_table_bicubically(grid: tuple[int, int]) -> None:
    ours, seed = pair()
    g = math.isqrt(ours.num_queries)
    table = seed.pos_embed.reshape(1, g, g, -1).permute(0, 3, 1, 2)
    pos = F.interpolate(table, size=grid, mode="bicubic", align_corners=False).permute(0, 2, 3, 1).flatten(0, 2)
    x = torch.randn(2, grid[0] * grid[1], 24)
    torch.testing.assert_close(ours(x, grid), seed(x, pos_embed=pos), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("grid", [(2, 5), (3, 3), (7, 4)], ids=str)
def test_sincos_key_positions_are_computed_for_the_actual_grid(grid: tuple[int, int]) -> None:
    ours, seed = pair(key_pos_embed="sincos")
    pos = torch.from_numpy(get_2d_sincos_pos_embed(32, grid)).float()
    torch.testing.assert_close(ours.key_positions(grid), pos, atol=1e-6, rtol=1e-6)
    x = torch.randn(2, grid[0] * grid[1], 24)
    torch.testing.assert_close(ours(x, grid), seed(x, pos_embed=pos), atol=1e-5, rtol=1e-5)


def test_sincos_table_matches_mae() -> None:
    for rows, cols in [(4, 4), (3, 7)]:
        expected = torch.from_numpy(get_2d_sincos_pos_embed(64, (rows, cols))).float()
        torch.testing.assert_close(sincos_2d(64, rows, cols), expected, atol=1e-6, rtol=1e-6)


def test_fixed_token_count_and_output_grid() -> None:
    ours, _ = pair(num_queries=16)
    for grid in [(1, 1), (4, 9), (16, 16)]:
        out = ours(torch.randn(1, grid[0] * grid[1], 24), grid)
        assert out.shape == (1, 16, 32) and ours.num_tokens(grid) == 16 and ours.output_grid(grid) == (4, 4)


def test_num_queries_must_be_a_perfect_square() -> None:
    with pytest.raises(ValidationError, match="perfect square"):
        ResamplerConnectorConfig(num_queries=10)


def test_heads_default_to_embed_dim_over_128() -> None:
    with torch.device("meta"):
        assert ResamplerConnector(ResamplerConnectorConfig(), 1792, 4096).num_heads == 32
        assert ResamplerConnector(ResamplerConnectorConfig(num_queries=4), 16, 64).num_heads == 1
        assert ResamplerConnector(ResamplerConnectorConfig(num_heads=8), 16, 64).num_heads == 8
    with pytest.raises(ValueError, match="does not divide"):
        ResamplerConnector(ResamplerConnectorConfig(num_queries=4, num_heads=3), 16, 64)


def test_parameters_and_initialisation() -> None:
    torch.manual_seed(0)
    r = ResamplerConnector(ResamplerConnectorConfig(num_queries=256), in_dim=128, out_dim=512)
    names = {n for n, _ in r.named_parameters()}
    assert "pos_embed" not in names and "pos_embed" in r.state_dict(), "fixed table: persistent buffer"
    assert isinstance(r.kv_proj, nn.Linear) and r.kv_proj.bias is None
    assert isinstance(ResamplerConnector(ResamplerConnectorConfig(num_queries=4), 32, 32).kv_proj, nn.Identity)
    assert abs(r.query.std().item() - 0.02) < 0.002  # trunc_normal_(std=.02), default bounds +-2 as the seed
    assert abs(r.proj.std().item() - 512**-0.5) < 0.002
    assert abs(r.kv_proj.weight.std().item() - 0.02) < 0.002
    assert torch.equal(r.ln_q.weight, torch.ones(512)) and r.ln_q.eps == 1e-6
    torch.testing.assert_close(r.pos_embed, sincos_2d(512, 16, 16))


def test_rejects_rows_that_do_not_match_the_grid() -> None:
    ours, _ = pair()
    with pytest.raises(ValueError, match="patch grid"):
        ours(torch.randn(1, 10, 24), (3, 3))
