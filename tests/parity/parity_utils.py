"""Helpers of the transformers parity tests: tiny configs, the mmfw data path, and the mmfw -> transformers mapping.

The name mapping is the prefix table of :mod:`mmfw.export.llava_names` (shared with the benchmarks), kept apart from
the exporter's per-component mapping (``build_hf_llava``), so the parity tests check the model code and the export
tests check the exporter.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from mmfw.components import Registries
from mmfw.config import load_config_dict
from mmfw.data.collator import VLMCollator
from mmfw.data.tokenize import encode_prompt
from mmfw.export.llava_names import hf_llava_state_dict
from mmfw.model.builder import build_model
from mmfw.model.vlm import VisionLanguageModel

TILE = 56
CLIP_ARCH: dict[str, Any] = {"image_size": TILE, "patch_size": 14, "hidden_size": 32, "intermediate_size": 64,
                             "num_hidden_layers": 3, "num_attention_heads": 4, "projection_dim": 32}
LLM_ARCH: dict[str, Any] = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                            "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024}
PINPOINTS = [[TILE, 2 * TILE], [2 * TILE, TILE], [2 * TILE, 2 * TILE], [3 * TILE, TILE], [TILE, 3 * TILE]]
SYSTEM = "You are a helpful assistant."
QUESTIONS = ("What is in the picture?", "Describe the image.", "What colour is it?")

def model_config(tokenizer_dir: Path, strategy: dict[str, Any], llm_type: str = "llama") -> dict[str, Any]:
    return {
        "vision_encoder": {"type": "clip", "architecture": copy.deepcopy(CLIP_ARCH)},
        "connector": {"type": "mlp", "depth": 2},
        "llm": {"type": llm_type, "tokenizer": str(tokenizer_dir), "architecture": copy.deepcopy(LLM_ARCH)},
        "image_strategy": strategy,
    }


def build_mmfw(registries: Registries, model: dict[str, Any], seed: int = 0) -> tuple[VisionLanguageModel, Any]:
    if model["llm"]["type"] not in registries.llms:
        pytest.skip(f"LLM component {model['llm']['type']!r} is not registered (yet)")
    cfg = load_config_dict({"model": model, "training": {"max_steps": 1}}, registries)
    torch.manual_seed(seed)
    vlm, tokenizer = build_model(cfg.model, registries)
    with torch.no_grad():  # make the learned newline clearly non-trivial
        for p in vlm.image_strategy.parameters():
            p.normal_()
    return vlm.eval(), tokenizer


def to_hf_state_dict(vlm: VisionLanguageModel) -> dict[str, torch.Tensor]:
    return hf_llava_state_dict(vlm)


def load_into_hf(hf: torch.nn.Module, vlm: VisionLanguageModel) -> None:
    """Copy mmfw's weights into ``hf``. Vision layers after the feature layer (and the post-layernorm) may be absent
    from mmfw, which drops what never reaches the output; they keep their random values in ``hf``."""
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(vlm), strict=False)
    assert unexpected == []
    layers = hf.config.vision_config.num_hidden_layers
    used = layers + 1 + hf.config.vision_feature_layer if hf.config.vision_feature_layer < 0 else \
        hf.config.vision_feature_layer
    for key in missing:
        m = re.match(r"model\.vision_tower\.encoder\.layers\.(\d+)\.", key)
        assert key.startswith("model.vision_tower.post_layernorm.") or (m and int(m.group(1)) >= used), key
    hf.eval()


def mmfw_batch(vlm: VisionLanguageModel, tokenizer: Any, images: list[Image.Image]) -> dict[str, torch.Tensor]:
    """One sample per image, each with a system prompt and a question, right-padded: the mmfw data pipeline."""
    items = []
    for i, image in enumerate(images):
        inp = vlm.image_strategy.preprocess(image)
        messages = [{"role": "user", "content": f"<image>\n{QUESTIONS[i % len(QUESTIONS)]}"}]
        ids = encode_prompt(messages, tokenizer, image_token="<image>",
                            image_token_counts=[vlm.image_strategy.num_tokens(inp.size)], system_prompt=SYSTEM)
        items.append({"input_ids": ids, "labels": [-100] * len(ids), "images": [inp]})
    batch = VLMCollator(tokenizer.pad_token_id)(items)
    return batch.model_inputs()


def max_logit_diff(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    keep = mask.bool()
    return float((a[keep] - b[keep]).abs().max())
