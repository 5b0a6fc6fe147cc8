"""The patch-merger connector: block order, padding of odd grids, and parity with Qwen2-VL's ``PatchMerger``."""

from __future__ import annotations

import pytest
import torch

from mmfw.connectors.patch_merger import PatchMergerConfig, PatchMergerConnector


def reference(conn: PatchMergerConnector, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Token (r, c) = MLP(concat of normed patches (r*m + i, c*m + j), i, j row-major; zeros outside the grid)."""
    m = conn.cfg.merge_size
    rows, cols = grid
    normed = conn.norm(features)
    out = []
    for n in range(features.shape[0]):
        tokens = []
        for r in range(-(-rows // m)):
            for c in range(-(-cols // m)):
                parts = []
                for i in range(m):
                    for j in range(m):
                        y, x = r * m + i, c * m + j
                        inside = y < rows and x < cols
                        parts.append(normed[n, y * cols + x] if inside else torch.zeros(features.shape[-1]))
                tokens.append(conn.mlp(torch.cat(parts)))
        out.append(torch.stack(tokens))
    return torch.stack(out)


@pytest.mark.parametrize(("grid", "merge", "out_grid"), [((4, 4), 2, (2, 2)), ((3, 5), 2, (2, 3)),
                                                         ((6, 3), 3, (2, 1)), ((2, 3), 1, (2, 3))])
def test_blocks_of_neighbouring_patches_become_one_token(grid, merge, out_grid) -> None:
    torch.manual_seed(0)
    conn = PatchMergerConnector(PatchMergerConfig(merge_size=merge, hidden_size=20, depth=3), in_dim=6, out_dim=10)
    assert conn.output_grid(grid) == out_grid and conn.num_tokens(grid) == out_grid[0] * out_grid[1]
    features = torch.randn(2, grid[0] * grid[1], 6)
    out = conn(features, grid)
    assert out.shape == (2, conn.num_tokens(grid), 10)
    torch.testing.assert_close(out, reference(conn, features, grid))
    assert [m.out_features for m in conn.mlp if isinstance(m, torch.nn.Linear)] == [20, 20, 10]


def test_equals_qwen2_vl_patch_merger_on_block_ordered_patches() -> None:
    from transformers.models.qwen2_vl.modeling_qwen2_vl import PatchMerger

    torch.manual_seed(0)
    conn = PatchMergerConnector(PatchMergerConfig(), in_dim=8, out_dim=12)
    hf = PatchMerger(dim=12, context_dim=8, spatial_merge_size=2)
    hf.load_state_dict({k.replace("norm.", "ln_q."): v for k, v in conn.state_dict().items()})
    grid = (4, 6)
    features = torch.randn(1, 24, 8)
    # Qwen2-VL's image processor emits patches block by block; reorder the row-major grid the same way
    blocks = features.reshape(2, 2, 3, 2, 8).permute(0, 2, 1, 3, 4).reshape(24, 8)
    torch.testing.assert_close(conn(features, grid)[0], hf(blocks))


def test_rejects_features_that_do_not_form_the_grid() -> None:
    conn = PatchMergerConnector(PatchMergerConfig(), in_dim=4, out_dim=4)
    with pytest.raises(ValueError, match="10 features do not form a 3x3 grid"):
        conn(torch.randn(1, 10, 4), (3, 3))
