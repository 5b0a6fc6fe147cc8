"""mmfw CLIP + MLP + LLM equals transformers' Llava / LlavaNext built from the same tiny config and weights.

Each side prepares its own inputs (mmfw: image strategy + chat template + collator; transformers: its PIL image
processors, torchvision for mmfw's default ``backend: torch`` and PIL for ``backend: pil``) from the same real photos;
pixels must agree, then logits within 1e-4 (fp32) at every real token.
"""

from __future__ import annotations

import pytest
import torch
from parity_utils import (
    CLIP_ARCH,
    PINPOINTS,
    TILE,
    build_mmfw,
    load_into_hf,
    max_logit_diff,
    mmfw_batch,
    model_config,
)
from PIL import Image
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaImageProcessor,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaNextImageProcessor,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil
from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

from mmfw.encoders.clip import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD

TOL = 1e-4
NORM = {"image_mean": OPENAI_CLIP_MEAN, "image_std": OPENAI_CLIP_STD}


def hf_llava_config(vlm, cls=LlavaConfig, **extra):
    return cls(vision_config=CLIPVisionConfig(**CLIP_ARCH), text_config=vlm.llm.model.config,
               image_token_id=vlm.image_token_id, vision_feature_layer=-2, vision_feature_select_strategy="default",
               projector_hidden_act="gelu", **extra)


BACKENDS = {"torch": (LlavaImageProcessor, CLIPImageProcessor, LlavaNextImageProcessor),
            "pil": (LlavaImageProcessorPil, CLIPImageProcessorPil, LlavaNextImageProcessorPil)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("strategy", ["pad", "resize"])
def test_llava_logits_match_transformers(strategy, backend, registries, tokenizer_dir, photos) -> None:
    vlm, tok = build_mmfw(registries, model_config(tokenizer_dir, {"type": strategy, "backend": backend}))
    hf = LlavaForConditionalGeneration(hf_llava_config(vlm))
    load_into_hf(hf, vlm)
    pad_cls, resize_cls, _ = BACKENDS[backend]
    if strategy == "pad":
        proc = pad_cls(do_pad=True, size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE}, **NORM)
    else:
        proc = resize_cls(size={"height": TILE, "width": TILE}, do_center_crop=False, **NORM)

    images = list(photos.values())
    batch = mmfw_batch(vlm, tok, images)
    hf_pixels = proc(images, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(batch["pixel_values"], hf_pixels, atol=1e-5, rtol=0)
    assert (batch["input_ids"] == vlm.image_token_id).sum() == len(images) * (TILE // 14) ** 2

    with torch.no_grad():
        ours = vlm(**batch).logits
        theirs = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                    pixel_values=hf_pixels).logits
    assert max_logit_diff(ours, theirs, batch["attention_mask"]) <= TOL


@pytest.mark.parametrize(("llm_type", "backend"), [("mistral", "torch"), ("llama", "pil")])
def test_llava_next_logits_match_transformers(llm_type, backend, registries, tokenizer_dir, photos) -> None:
    strategy = {"type": "anyres", "grid_pinpoints": PINPOINTS, "merge": "spatial-unpad", "backend": backend}
    vlm, tok = build_mmfw(registries, model_config(tokenizer_dir, strategy, llm_type))
    hf = LlavaNextForConditionalGeneration(hf_llava_config(vlm, LlavaNextConfig, image_grid_pinpoints=PINPOINTS))
    load_into_hf(hf, vlm)
    proc = BACKENDS[backend][2](size={"shortest_edge": TILE}, crop_size={"height": TILE, "width": TILE},
                                image_grid_pinpoints=PINPOINTS, **NORM)

    images = [photos["astronaut"], photos["chelsea"], photos["chelsea"].transpose(Image.Transpose.ROTATE_90),
              photos["coffee"].crop((0, 120, 600, 270)), photos["chelsea"].crop((170, 0, 290, 300)).resize((48, 120))]
    batch = mmfw_batch(vlm, tok, images)
    hf_inputs = proc(images, return_tensors="pt")
    torch.testing.assert_close(batch["image_sizes"].flip(-1), hf_inputs["image_sizes"])
    for i, (pixels, n) in enumerate(zip(torch.split(batch["pixel_values"], batch["num_tiles"].tolist()),
                                        batch["num_tiles"].tolist(), strict=True)):
        torch.testing.assert_close(pixels, hf_inputs["pixel_values"][i, :n], atol=1e-5, rtol=0)
    # 2x2, 1x3 and 3x1 layouts; padding rows (chelsea) and padding columns (chelsea rotated) removed
    strategy = vlm.image_strategy
    sizes = [tuple(s) for s in batch["image_sizes"].tolist()]
    assert [strategy.tile_layout(s) for s in sizes] == [(2, 2), (2, 2), (2, 2), (1, 3), (3, 1)]
    assert [strategy.num_tokens(s) for s in sizes[:3]] == [16 + 8 * 9, 16 + 6 * 9, 16 + 8 * 7]

    with torch.no_grad():
        ours = vlm(**batch).logits
        theirs = hf(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], **hf_inputs).logits
    assert max_logit_diff(ours, theirs, batch["attention_mask"]) <= TOL
