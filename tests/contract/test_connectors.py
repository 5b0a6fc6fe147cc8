"""Connector contract, for every registered connector built from its ``example()`` config.

``num_tokens(grid)`` is the number of rows ``forward`` returns for that grid (square and non-square), the width is
``out_dim``, ``output_grid`` (when given) has ``num_tokens`` cells, samples do not leak into each other, gradients
reach every trainable parameter and the input, and a connector cast to bfloat16 accepts the encoder's float32 output.
"""

from __future__ import annotations

import pytest
import torch
from contract_utils import example_config, missing_grads

from mmfw.components import Registries
from mmfw.connectors.base import Connector

IN_DIM, OUT_DIM = 32, 48
GRIDS = [(4, 4), (3, 5), (2, 7), (6, 6)]


def build(registries: Registries, name: str) -> Connector:
    """Built with ``IN_DIM != OUT_DIM``, or with equal widths for a connector that rejects different ones."""
    cfg = example_config(registries, "connectors", name)
    try:
        return registries.connectors.build(cfg, in_dim=IN_DIM, out_dim=OUT_DIM)
    except ValueError:
        return registries.connectors.build(cfg, in_dim=OUT_DIM, out_dim=OUT_DIM)


@pytest.fixture
def connector(registries: Registries, connector_name: str) -> Connector:
    torch.manual_seed(0)
    return build(registries, connector_name)


def test_width_mismatch_is_supported_or_rejected_clearly(registries: Registries, connector_name: str) -> None:
    cfg = example_config(registries, "connectors", connector_name)
    try:
        registries.connectors.build(cfg, in_dim=IN_DIM, out_dim=OUT_DIM)
    except ValueError as e:
        assert str(IN_DIM) in str(e) and str(OUT_DIM) in str(e), "the error names both widths"


@pytest.mark.parametrize("grid", GRIDS, ids=str)
def test_rows_equal_num_tokens(connector: Connector, grid: tuple[int, int]) -> None:
    out = connector(torch.randn(2, grid[0] * grid[1], connector.in_dim), grid)
    assert out.shape == (2, connector.num_tokens(grid), connector.out_dim)
    assert torch.isfinite(out).all()
    layout = connector.output_grid(grid)
    if layout is not None:
        assert layout[0] * layout[1] == connector.num_tokens(grid)


def test_samples_are_independent(connector: Connector) -> None:
    grid = (3, 5)
    x = torch.randn(3, 15, connector.in_dim)
    connector.eval()
    torch.testing.assert_close(connector(x, grid)[2:], connector(x[2:], grid), atol=1e-5, rtol=1e-4)


def test_gradients_reach_every_trainable_parameter_and_the_input(connector: Connector) -> None:
    grid = (3, 5)
    x = torch.randn(2, 15, connector.in_dim, requires_grad=True)
    connector(x, grid).pow(2).mean().backward()
    assert missing_grads(connector.named_parameters()) == []
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_bfloat16(connector: Connector) -> None:
    connector.to(torch.bfloat16)
    grid = (4, 4)
    out = connector(torch.randn(1, 16, connector.in_dim, dtype=torch.bfloat16), grid)
    assert out.dtype == torch.bfloat16
    out = connector(torch.randn(1, 16, connector.in_dim), grid)  # a float32 encoder feeding a bf16 LLM
    assert out.shape == (1, connector.num_tokens(grid), connector.out_dim)
