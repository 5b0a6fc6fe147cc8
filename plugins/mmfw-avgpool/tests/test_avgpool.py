"""The avgpool-mlp connector keeps mmfw's contracts (through the kit), pools the grid as documented, and is found
through its entry point."""

from __future__ import annotations

import pytest

pytest.importorskip("mmfw_avgpool", reason="the mmfw-avgpool plugin is not installed (pip install -e plugins/mmfw-avgpool)")
import torch
from mmfw_avgpool.connector import AvgPoolConnectorConfig

from mmfw.testing import check_connector, installed_registries


@pytest.fixture(scope="module")
def registries():
    return installed_registries()


def test_installed_plugin_is_discovered_through_its_entry_point(registries) -> None:
    entry = registries.connectors.entry("avgpool-mlp")
    assert entry.source.startswith("mmfw-avgpool:avgpool (mmfw_avgpool.connector.AvgPoolConnector")


@pytest.mark.parametrize("cfg", [None, AvgPoolConnectorConfig(stride=3, depth=1), AvgPoolConnectorConfig(stride=1)],
                         ids=["example", "stride-3", "stride-1"])
def test_keeps_every_contract(cfg) -> None:
    checked = check_connector(cfg or "avgpool-mlp")
    assert {"token-count", "gradients", "image-tokens", "vlm-gradients", "meta-build"} <= set(checked)


def test_keeps_every_contract_with_anyres_spatial_unpad() -> None:
    """The pooled grid is kept (output_grid), so anyres's spatial unpadding works on it."""
    anyres = installed_registries().image_strategies.config_class("anyres").example()
    assert anyres.merge == "spatial-unpad"
    check_connector("avgpool-mlp", partners={"image_strategies": anyres},
                    only=["image-tokens", "vlm-gradients", "text-only"])


def test_avgpool_connector_pools_the_grid(registries) -> None:
    cfg = registries.connectors.config_class("avgpool-mlp")(stride=2, depth=1)
    conn = registries.connectors.build(cfg, in_dim=3, out_dim=3)
    with torch.no_grad():
        conn.mlp[0].weight.copy_(torch.eye(3))
        conn.mlp[0].bias.zero_()
    grid = (3, 4)
    feats = torch.arange(12 * 3, dtype=torch.float32).view(1, 12, 3)
    out = conn(feats, grid)
    assert conn.num_tokens(grid) == out.shape[1] == 4 and conn.output_grid(grid) == (2, 2)
    image = feats.view(3, 4, 3)
    expected_first = image[0:2, 0:2].reshape(-1, 3).mean(0)
    expected_last = image[2:3, 2:4].reshape(-1, 3).mean(0)  # ceil mode: partial window, padding not counted
    torch.testing.assert_close(out[0, 0], expected_first)
    torch.testing.assert_close(out[0, 3], expected_last)
