"""The example plugin package (plugins/mmfw-avgpool), installed as a real distribution, is discovered and works."""

from __future__ import annotations

import torch

from mmfw.components import collect_registries, make_plugin_manager


def test_installed_plugin_is_discovered_through_its_entry_point() -> None:
    regs = collect_registries(make_plugin_manager(load_entry_points=True))
    entry = regs.connectors.entry("avgpool-mlp")
    assert entry.source.startswith("mmfw-avgpool:avgpool (mmfw_avgpool.connector.AvgPoolConnector")


def test_avgpool_connector_pools_the_grid() -> None:
    regs = collect_registries(make_plugin_manager(load_entry_points=True))
    cfg = regs.connectors.config_class("avgpool-mlp")(stride=2, depth=1)
    conn = regs.connectors.build(cfg, in_dim=3, out_dim=3)
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
