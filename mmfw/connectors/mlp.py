"""MLP connector (LLaVA ``mlp2x_gelu``): ``Linear(in, out) -> GELU -> Linear(out, out)``, depth configurable."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from mmfw.config.base import ConnectorConfig
from mmfw.connectors.base import Connector
from mmfw.registry import component


class MLPConnectorConfig(ConnectorConfig):
    type: Literal["mlp"] = "mlp"
    depth: int = Field(2, ge=1)
    """Number of Linear layers (GELU between them)."""
    activation: Literal["gelu", "gelu_tanh", "relu", "silu"] = "gelu"
    init_std: float | None = Field(None, gt=0)
    """If set, weights ~ N(0, init_std) and zero bias (the Qwen VLM uses 0.01); else PyTorch's default."""


_ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": lambda: nn.ReLU(),
    "silu": lambda: nn.SiLU(),
}


@component("mlp", config=MLPConnectorConfig)
class MLPConnector(Connector):
    def __init__(self, cfg: MLPConnectorConfig, in_dim: int, out_dim: int) -> None:
        super().__init__(cfg, in_dim, out_dim)
        layers: list[nn.Module] = [nn.Linear(in_dim, out_dim)]
        for _ in range(cfg.depth - 1):
            layers += [_ACTIVATIONS[cfg.activation](), nn.Linear(out_dim, out_dim)]
        self.net = nn.Sequential(*layers)
        if cfg.init_std is not None:
            for m in self.net:
                if isinstance(m, nn.Linear):
                    nn.init.normal_(m.weight, std=cfg.init_std)
                    nn.init.zeros_(m.bias)

    def num_tokens(self, grid: tuple[int, int]) -> int:
        return grid[0] * grid[1]

    def output_grid(self, grid: tuple[int, int]) -> tuple[int, int]:
        return grid

    def forward(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return self.net(features.to(self.net[0].weight.dtype))
