"""``anyres``: resolution choice, unpadding, validation, merge layout, and training through a built model."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from PIL import Image
from transformers.image_processing_utils import select_best_resolution as hf_select_best_resolution
from transformers.models.llava_next.modeling_llava_next import unpad_image

from mmfw.config import ConfigError, load_config_dict
from mmfw.encoders.base import VisionSpec
from mmfw.encoders.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from mmfw.image_strategies.anyres import (
    AnyresStrategy,
    AnyresStrategyConfig,
    fit_size,
    select_best_resolution,
    unpad_shape,
)
from mmfw.image_strategies.base import VisionGeometry
from mmfw.model.builder import build_model

TILE = 28


def strategy(tile: int = TILE, patch: int = 7, grid: bool = True, hidden: int = 6, **cfg) -> AnyresStrategy:
    spec = VisionSpec(image_size=(tile, tile), patch_size=patch, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD,
                      embed_dim=4)
    geometry = VisionGeometry(spec=spec, connector_tokens=lambda g: g[0] * g[1] if grid else 5,
                              connector_grid=lambda g: g if grid else None)
    return AnyresStrategy(AnyresStrategyConfig(**cfg), geometry, hidden_size=hidden)


def test_best_resolution_and_unpad_agree_with_transformers() -> None:
    rng = random.Random(0)
    pinpoints = [(336, 672), (672, 336), (672, 672), (1008, 336), (336, 1008), (1008, 1008)]
    for _ in range(2000):
        size = (rng.randint(1, 5000), rng.randint(1, 5000))
        assert select_best_resolution(size, pinpoints) == hf_select_best_resolution(size, pinpoints)
        grid = (rng.randint(1, 6) * 24, rng.randint(1, 6) * 24)
        rows, cols = unpad_shape(size, grid)
        expected = unpad_image(torch.zeros(1, *grid), list(size)).shape[1:]
        assert (rows.stop - rows.start, cols.stop - cols.start) == tuple(expected)


def test_default_pinpoints_are_llava_next_layouts_at_the_native_size() -> None:
    assert strategy(tile=336, patch=14).grid_pinpoints == [(336, 672), (672, 336), (672, 672), (1008, 336),
                                                          (336, 1008)]
    assert strategy(tile=TILE).grid_pinpoints[2] == (2 * TILE, 2 * TILE)


def test_pinpoint_that_is_not_a_tile_multiple_is_a_located_error() -> None:
    with pytest.raises(ConfigError) as err:  # located at the strategy's own field; the builder adds model.image_strategy
        strategy(grid_pinpoints=[[TILE, 2 * TILE], [TILE, 50]])
    assert err.value.problems[0].startswith("grid_pinpoints[1]: [28, 50] is not a multiple")
    assert err.value.at("model.image_strategy").problems[0].startswith("model.image_strategy.grid_pinpoints[1]: ")
    with pytest.raises(ValueError, match="sizes must be positive"):
        AnyresStrategyConfig(grid_pinpoints=[[0, 28]])


def test_spatial_unpad_needs_a_connector_that_keeps_the_layout() -> None:
    with pytest.raises(ConfigError, match=r"^merge: 'spatial-unpad' needs a connector"):
        strategy(grid=False)
    flat = strategy(grid=False, merge="flat")
    assert flat.num_tokens((100, 40)) == 5 * flat.num_tiles((100, 40))
    assert not list(flat.parameters())  # no newline parameter in flat mode


def test_max_tiles_drops_larger_layouts() -> None:
    s = strategy(max_tiles=2)
    assert s.grid_pinpoints == [(TILE, 2 * TILE), (2 * TILE, TILE)]
    assert s.num_tiles((1000, 1000)) == 3
    with pytest.raises(ConfigError, match=r"^max_tiles: 1 excludes every grid pinpoint"):
        strategy(max_tiles=1)


@pytest.mark.parametrize("merge", ["flat", "spatial-unpad"])
@pytest.mark.parametrize("size", [(1, 1), (28, 28), (100, 40), (40, 100), (57, 55), (300, 299), (999, 50), (50, 999)])
def test_preprocess_and_merge_agree_with_num_tokens(merge: str, size: tuple[int, int]) -> None:
    s = strategy(merge=merge)
    inp = s.preprocess(Image.new("RGB", size, (10, 200, 30)))
    assert inp.size == size and inp.pixel_values.shape == (s.num_tiles(size), 3, TILE, TILE)
    feats = torch.randn(s.num_tiles(size), 16, 6)
    out = s.merge(feats, size)
    assert out.shape == (s.num_tokens(size), 6)
    torch.testing.assert_close(out[:16], feats[0])  # base tile first
    if merge == "spatial-unpad":
        rows, cols = s._unpadded(size)[:2]
        width = cols.stop - cols.start
        newline_rows = out[16:].view(rows.stop - rows.start, width + 1, 6)[:, -1]
        torch.testing.assert_close(newline_rows, s.image_newline.expand_as(newline_rows))


def test_wrong_tile_count_is_an_error_but_a_lone_base_tile_merges() -> None:
    s = strategy()
    with pytest.raises(ValueError, match="expected 1 \\+ 2x2 tiles, got 3"):
        s.merge(torch.randn(3, 16, 6), (100, 100))
    assert s.merge(torch.randn(1, 16, 6), (100, 100)).shape == (16, 6)


@pytest.mark.parametrize("fill, expected", [("black", 0), ("mean", 1)])
def test_canvas_fill(fill: str, expected: int) -> None:
    s = strategy(fill=fill)
    pixels = s.preprocess(Image.new("RGB", (200, 20), (255, 255, 255))).pixel_values  # 1x2 layout, padded rows
    corner = pixels[1, :, 0, 0] * torch.tensor(OPENAI_CLIP_STD) + torch.tensor(OPENAI_CLIP_MEAN)
    mean = torch.tensor([int(m * 255) / 255 for m in OPENAI_CLIP_MEAN])
    torch.testing.assert_close(corner, mean * expected, atol=1e-5, rtol=0)


def test_trains_end_to_end_including_the_newline(tiny_experiment, registries) -> None:
    exp = copy.deepcopy(tiny_experiment)
    exp["model"]["image_strategy"] = {"type": "anyres", "max_tiles": 4}
    cfg = load_config_dict(exp, registries)
    torch.manual_seed(0)
    model, tok = build_model(cfg.model, registries)
    assert model.image_strategy.merges_per_image
    images = [model.image_strategy.preprocess(Image.new("RGB", size, (50, 90, 200))) for size in [(90, 40), (30, 70)]]
    n = [model.image_strategy.num_tokens(i.size) for i in images]
    text = tok.encode("look", add_special_tokens=False)
    ids = torch.tensor([text + [model.image_token_id] * n[0] + text + [model.image_token_id] * n[1] + text])
    out = model(input_ids=ids, labels=ids, pixel_values=torch.cat([i.pixel_values for i in images]),
                image_sizes=torch.tensor([i.size for i in images]),
                num_tiles=torch.tensor([i.pixel_values.shape[0] for i in images]))
    out.loss.backward()
    assert float(model.image_strategy.image_newline.grad.abs().sum()) > 0
    model.zero_grad()
    text_only = model(input_ids=torch.tensor([text]), labels=torch.tensor([text]))  # dummy image pass: 1 tile
    text_only.loss.backward()
    assert model.image_strategy.image_newline.grad is not None


def test_tiles_are_the_canvas_crops_normalised_one_by_one() -> None:
    """Tiles cut from the normalised canvas equal each crop normalised on its own (the earlier way), bit for bit."""
    from mmfw.image_strategies.base import to_tensor

    s = strategy(backend="pil")  # the PIL resizes below
    rng = torch.Generator().manual_seed(0)
    image = Image.fromarray(torch.randint(0, 256, (50, 90, 3), generator=rng, dtype=torch.uint8).numpy())
    pixels = s.preprocess(image).pixel_values
    best_h, best_w = s.best_resolution(image.size)
    new_h, new_w = fit_size((50, 90), (best_h, best_w))
    canvas = Image.new("RGB", (best_w, best_h), (0, 0, 0))
    canvas.paste(image.resize((new_w, new_h), Image.Resampling.BICUBIC), ((best_w - new_w) // 2, (best_h - new_h) // 2))
    crops = [image.resize((TILE, TILE), Image.Resampling.BICUBIC)] + [
        canvas.crop((x, y, x + TILE, y + TILE)) for y in range(0, best_h, TILE) for x in range(0, best_w, TILE)]
    expected = torch.stack([to_tensor(c, OPENAI_CLIP_MEAN, OPENAI_CLIP_STD) for c in crops])
    assert pixels.shape == expected.shape and torch.equal(pixels, expected)
