"""Identity connector (LLaVA's ``identity`` projector): patch features are used as LLM tokens unchanged.

Only valid when the vision width equals the LLM hidden size; no parameters.
"""

from __future__ import annotations

from typing import Literal

import torch
from typing_extensions import Self

from mmfw.config.base import ConnectorConfig
from mmfw.connectors.base import Connector
from mmfw.registry import component


class IdentityConnectorConfig(ConnectorConfig):
    type: Literal["identity"] = "identity"

    @classmethod
    def example(cls) -> Self:
        return cls()


@component("identity", config=IdentityConnectorConfig)
class IdentityConnector(Connector):
    def __init__(self, cfg: IdentityConnectorConfig, in_dim: int, out_dim: int) -> None:
        if in_dim != out_dim:
            raise ValueError(f"identity connector: the vision encoder's width ({in_dim}) must equal the LLM hidden "
                             f"size ({out_dim}); use a 'linear' or 'mlp' connector to project between them")
        super().__init__(cfg, in_dim, out_dim)

    def num_tokens(self, grid: tuple[int, int]) -> int:
        return grid[0] * grid[1]

    def output_grid(self, grid: tuple[int, int]) -> tuple[int, int]:
        return grid

    def forward(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return features
