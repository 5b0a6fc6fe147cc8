"""The source documents' models composed at their real size on the meta device (no memory, no weights).

OmniLMM-12B: EVA02-E/14 (penultimate block) -> resampler (64 queries) -> Mistral-7B; LLaVA-1.5-7B: CLIP ViT-L/14-336
(penultimate layer) -> 2-layer MLP -> Vicuna-7B (Llama). Shapes, token counts and parameter totals are checked.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmfw.config.experiment import ModelConfig
from mmfw.connectors.mlp import MLPConnectorConfig
from mmfw.connectors.resampler import ResamplerConnectorConfig
from mmfw.encoders.clip import CLIPArchitecture, CLIPEncoderConfig
from mmfw.encoders.eva02 import EVA02EncoderConfig
from mmfw.image_strategies.pad import PadStrategyConfig
from mmfw.image_strategies.resize import ResizeStrategyConfig
from mmfw.llms.base import CausalLMArchitecture
from mmfw.llms.llama import LlamaLLMConfig
from mmfw.llms.mistral import MistralLLMConfig
from mmfw.model.builder import build_model

MISTRAL_7B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=8, vocab_size=32000)
LLAMA_7B = dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                vocab_size=32000)


def models(tokenizer: str) -> dict[str, tuple[ModelConfig, int, float]]:
    """name: (config, image tokens, parameters in billions)."""
    return {
        "omnilmm-12b": (ModelConfig(
            vision_encoder=EVA02EncoderConfig(model_name="eva02_enormous_patch14_clip_224.laion2b_plus",
                                              dtype="bfloat16"),
            connector=ResamplerConnectorConfig(num_queries=64),
            llm=MistralLLMConfig(tokenizer=tokenizer, architecture=CausalLMArchitecture(**MISTRAL_7B),
                                 dtype="bfloat16", extra_special_tokens=["<im_start>", "<im_patch>", "<im_end>"]),
            image_strategy=ResizeStrategyConfig()), 64, 11.6),
        "llava-1.5-7b": (ModelConfig(
            vision_encoder=CLIPEncoderConfig(architecture=CLIPArchitecture(), dtype="bfloat16"),
            connector=MLPConnectorConfig(),
            llm=LlamaLLMConfig(tokenizer=tokenizer, architecture=CausalLMArchitecture(**LLAMA_7B), dtype="bfloat16"),
            image_strategy=PadStrategyConfig()), 576, 7.06),
    }


@pytest.mark.parametrize("name", ["omnilmm-12b", "llava-1.5-7b"])
def test_real_scale_composition_on_meta(name: str, registries, tokenizer_dir: Path) -> None:
    cfg, tokens, billions = models(str(tokenizer_dir))[name]
    with torch.device("meta"):
        model, _ = build_model(cfg, registries)
        h, w = model.vision_encoder.spec.image_size
        feats = model.encode_images(torch.empty(1, 3, h, w), torch.tensor([[w, h]]), torch.tensor([1]))
    assert model.image_strategy.num_tokens((1280, 720)) == tokens
    assert feats.shape == (tokens, 4096)
    assert sum(p.numel() for p in model.parameters()) / 1e9 == pytest.approx(billions, abs=0.05)
