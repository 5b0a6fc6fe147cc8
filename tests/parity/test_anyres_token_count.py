"""``anyres`` token counts equal what transformers' LlavaNextProcessor expands ``<image>`` to, tiny to 4000 px.

The processor is built offline from the tiny test tokenizer and a LlavaNextImageProcessor configured like the
strategy. Every size is checked against the processor's per-size count; sizes up to ~1000 px also go through the
processor's full text + image path (larger ones only cost time there), whose tile count must match too.
"""

from __future__ import annotations

import pytest
from PIL import Image
from transformers import AutoTokenizer, LlavaNextImageProcessor, LlavaNextProcessor

from mmfw.encoders.base import VisionSpec
from mmfw.encoders.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD
from mmfw.image_strategies.anyres import AnyresStrategy, AnyresStrategyConfig
from mmfw.image_strategies.base import VisionGeometry

SIZES = [  # (width, height)
    (1, 1), (9, 14), (14, 9), (64, 48), (48, 64), (200, 100), (100, 200), (336, 336), (337, 335), (500, 300),
    (300, 500), (672, 336), (336, 672), (800, 600), (600, 800), (1000, 1000), (1920, 1080), (1080, 1920),
    (2000, 300), (300, 2000), (4000, 3000), (3000, 4000), (4000, 90), (90, 4000), (4000, 4000),
]

GEOMETRIES = {
    # LLaVA-NeXT itself: CLIP ViT-L/14 at 336 px and the default pinpoints
    "llava-next": dict(tile=336, patch=14, cfg={}),
    # another encoder geometry, custom pinpoints up to 3x3 limited to 6 tiles
    "custom": dict(tile=224, patch=16, cfg={"grid_pinpoints": [[224 * r, 224 * c] for r in (1, 2, 3) for c in (1, 2, 3)],
                                            "max_tiles": 6}),
}


def make_strategy(tile: int, patch: int, cfg: dict) -> AnyresStrategy:
    spec = VisionSpec(image_size=(tile, tile), patch_size=patch, mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD,
                      embed_dim=8)
    geometry = VisionGeometry(spec=spec, connector_tokens=lambda g: g[0] * g[1], connector_grid=lambda g: g)
    return AnyresStrategy(AnyresStrategyConfig(**cfg), geometry, hidden_size=8)


@pytest.mark.parametrize("name", GEOMETRIES)
def test_token_counts_match_llava_next_processor(name, tokenizer_dir) -> None:
    g = GEOMETRIES[name]
    strategy = make_strategy(g["tile"], g["patch"], g["cfg"])
    image_processor = LlavaNextImageProcessor(
        size={"shortest_edge": g["tile"]}, crop_size={"height": g["tile"], "width": g["tile"]},
        image_grid_pinpoints=[list(p) for p in strategy.grid_pinpoints], image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    processor = LlavaNextProcessor(image_processor=image_processor, tokenizer=tokenizer, patch_size=g["patch"],
                                   vision_feature_select_strategy="default", num_additional_image_tokens=1)
    image_id = tokenizer.convert_tokens_to_ids("<image>")
    # the processor's own per-size count (what vLLM & co. use), for every size
    counts = processor._get_num_multimodal_tokens(image_sizes=[(h, w) for w, h in SIZES]).num_image_tokens
    assert [strategy.num_tokens(size) for size in SIZES] == counts
    assert len({strategy.tile_layout(size) for size in SIZES}) >= 4
    # and the full text + image path on real images (up to ~1000 px, so the test stays fast)
    for size in SIZES:
        if max(size) > 1100:
            continue
        out = processor(text="<image>", images=Image.new("RGB", size, (90, 120, 200)), return_tensors="pt")
        assert strategy.num_tokens(size) == int((out["input_ids"] == image_id).sum()), size
        assert strategy.num_tiles(size) == out["pixel_values"].shape[1], size
