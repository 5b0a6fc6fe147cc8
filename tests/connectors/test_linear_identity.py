"""``linear`` and ``identity`` connectors (LLaVA's simplest projectors)."""

from __future__ import annotations

import pytest
import torch

from mmfw.connectors.identity import IdentityConnector, IdentityConnectorConfig
from mmfw.connectors.linear import LinearConnector, LinearConnectorConfig


def test_linear_is_one_affine_map_per_patch() -> None:
    c = LinearConnector(LinearConnectorConfig(), in_dim=8, out_dim=12)
    x = torch.randn(2, 6, 8)
    torch.testing.assert_close(c(x, (2, 3)), x @ c.proj.weight.T + c.proj.bias)
    assert c.num_tokens((2, 3)) == 6 and c.output_grid((2, 3)) == (2, 3)
    assert LinearConnector(LinearConnectorConfig(bias=False), in_dim=8, out_dim=12).proj.bias is None


def test_identity_passes_features_through() -> None:
    c = IdentityConnector(IdentityConnectorConfig(), in_dim=16, out_dim=16)
    x = torch.randn(2, 12, 16)
    assert c(x, (3, 4)) is x
    assert c.num_tokens((3, 4)) == 12 and c.output_grid((3, 4)) == (3, 4)
    assert list(c.parameters()) == []


def test_identity_needs_equal_widths() -> None:
    with pytest.raises(ValueError, match=r"width \(1024\) must equal the LLM hidden size \(4096\)"):
        IdentityConnector(IdentityConnectorConfig(), in_dim=1024, out_dim=4096)
