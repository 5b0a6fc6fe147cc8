"""MLP connector (LLaVA ``mlp2x_gelu``): ``Linear(in, out) -> GELU -> Linear(out, out)``, depth configurable."""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn
from typing_extensions import Self

from mmfw.config.base import ConnectorConfig
from mmfw.connectors.base import Connector
from mmfw.errors import ExportError
from mmfw.interop import HFLlavaPart
from mmfw.registry import component


class MLPConnectorConfig(ConnectorConfig):
    type: Literal["mlp"] = "mlp"
    depth: int = Field(2, ge=1)
    """Number of Linear layers (GELU between them)."""
    activation: Literal["gelu", "gelu_tanh", "relu", "silu"] = "gelu"
    init_std: float | None = Field(None, gt=0)
    """If set, weights ~ N(0, init_std) and zero bias (the Qwen VLM uses 0.01); else PyTorch's default."""

    @classmethod
    def example(cls) -> Self:
        return cls()


ACTIVATIONS = {
    "gelu": lambda: nn.GELU(),
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": lambda: nn.ReLU(),
    "silu": lambda: nn.SiLU(),
}
"""Activation modules by config name (shared with the other MLP-style connectors)."""


def build_mlp(widths: list[int], activation: str = "gelu") -> nn.Sequential:
    """``Linear(widths[0], widths[1]) -> act -> Linear(widths[1], widths[2]) -> ...`` (no activation at the end)."""
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        if k:
            layers.append(ACTIVATIONS[activation]())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)

_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_pytorch_tanh", "relu": "relu", "silu": "silu"}
"""transformers' ``ACT2FN`` names of the activations."""


@component("mlp", config=MLPConnectorConfig)
class MLPConnector(Connector):
    def __init__(self, cfg: MLPConnectorConfig, in_dim: int, out_dim: int) -> None:
        super().__init__(cfg, in_dim, out_dim)
        self.net = build_mlp([in_dim] + [out_dim] * cfg.depth, cfg.activation)
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

    def hf_llava_export(self) -> HFLlavaPart:
        """transformers' ``LlavaMultiModalProjector`` (``linear_1 -> act -> linear_2``): depth 2 only."""
        if self.cfg.depth != 2:
            raise ExportError(f"depth {self.cfg.depth}: transformers' Llava projector has exactly 2 layers")
        return HFLlavaPart(
            config={"projector_hidden_act": _HF_ACTIVATIONS[self.cfg.activation], "multimodal_projector_bias": True},
            weights={f"model.multi_modal_projector.linear_{i + 1}.{k}": v
                     for i, layer in enumerate((self.net[0], self.net[2])) for k, v in layer.state_dict().items()})
