"""Every preset passes ``mmfw inspect`` and matches the public model it names.

Expected values are computed independently of mmfw: parameter counts from transformers' / timm's own classes built on
the meta device, image-token counts by hand.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    LlamaConfig,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from mmfw.config import load_config
from mmfw.inspection import inspect_config

PRESETS = Path(__file__).resolve().parents[1] / "configs" / "presets"
CLIP_L_336 = dict(image_size=336, patch_size=14, hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                  num_attention_heads=16, projection_dim=768)
MISTRAL_7B = dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                  num_key_value_heads=8)
LLAVA_NEXT_PINPOINTS = [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def unused_vision(hf: torch.nn.Module, feature_layer: int) -> int:
    """transformers keeps CLIP layers after the feature layer and the post-layernorm; mmfw does not build them."""
    tower = hf.model.vision_tower
    layers = tower.encoder.layers
    keep = feature_layer % (len(layers) + 1)
    return sum(count(layer) for layer in layers[keep:]) + count(tower.post_layernorm)


def report(registries, name: str, image_size: tuple[int, int] | None = None) -> dict:
    return inspect_config(load_config(PRESETS / f"{name}.yaml", registries), registries, image_size)


def test_every_preset_is_inspected() -> None:
    assert sorted(p.stem for p in PRESETS.glob("*.yaml")) == [
        "clip-qwen2-7b", "llava-1.5-7b", "llava-next-mistral-7b", "omnilmm-12b"]


def test_llava_1_5_7b(registries) -> None:
    r = report(registries, "llava-1.5-7b")
    with torch.device("meta"):
        hf = LlavaForConditionalGeneration(LlavaConfig(
            vision_config=CLIPVisionConfig(**CLIP_L_336), image_token_id=32000, projector_hidden_act="gelu",
            text_config=LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                    num_attention_heads=32, vocab_size=32064)))
    assert r["params"]["total"] == count(hf) - unused_vision(hf, -2)
    assert r["params"]["by_module"]["llm"] == count(hf.model.language_model) + count(hf.lm_head)
    assert r["params"]["by_module"]["connector"] == count(hf.model.multi_modal_projector)
    assert r["image_tokens"] == 576 and r["image_tokens_max"] == 576 and r["image_input"] == [1, 3, 336, 336]
    align, finetune = r["stages"]
    assert align["name"] == "align" and align["trainable"] == count(hf.model.multi_modal_projector)
    assert finetune["trainable"] == r["params"]["trainable"] == r["params"]["total"] - r["params"]["by_module"]["vision"]
    fsdp = yaml.safe_load((PRESETS.parents[1] / "configs" / "accelerate" / "fsdp.yaml").read_text())
    assert r["fsdp_wrap"] == ["CLIPEncoderLayer", "LlamaDecoderLayer"]
    assert sorted(fsdp["fsdp_config"]["fsdp_transformer_layer_cls_to_wrap"].split(",")) == r["fsdp_wrap"]
    total, trainable = r["params"]["total"], r["params"]["trainable"]
    assert r["memory_bytes"]["bf16"] == {"weights": 2 * total, "gradients": 2 * trainable,
                                         "optimizer": 8 * trainable, "total": 2 * total + 10 * trainable}


def test_llava_next_mistral_7b(registries) -> None:
    r = report(registries, "llava-next-mistral-7b", image_size=(672, 672))
    with torch.device("meta"):
        hf = LlavaNextForConditionalGeneration(LlavaNextConfig(
            vision_config=CLIPVisionConfig(**CLIP_L_336), image_token_id=32000, projector_hidden_act="gelu",
            image_grid_pinpoints=LLAVA_NEXT_PINPOINTS,
            text_config=MistralConfig(**MISTRAL_7B, vocab_size=32064)))
    assert r["params"]["total"] == count(hf) - unused_vision(hf, -2)
    assert r["params"]["by_module"]["image_strategy"] == hf.model.image_newline.numel() == 4096
    # 672x672 -> 2x2 tiles of 24x24 patches, nothing to unpad: 48 rows of 48 + newline, plus the 24x24 base tile
    assert r["image_tokens"] == 48 * 49 + 576 == 2928 == r["image_tokens_max"]
    assert r["image_input"] == [5, 3, 336, 336]
    # 1000x600 -> 672x672 grid (2x2 tiles); the image covers int(600 * 48 / 1000) = 28 of the 48 feature rows
    assert report(registries, "llava-next-mistral-7b", image_size=(1000, 600))["image_tokens"] == 28 * 49 + 576
    assert r["params"]["trainable"] == r["params"]["total"]  # the vision tower is tuned too


def test_omnilmm_12b(registries) -> None:
    import timm

    r = report(registries, "omnilmm-12b", image_size=(1000, 300))
    with torch.device("meta"):
        eva = timm.create_model("eva02_enormous_patch14_clip_224", pretrained=False, num_classes=0, img_size=448)
        llm = MistralForCausalLM(MistralConfig(**MISTRAL_7B, vocab_size=32000))
    dropped = (f"blocks.{len(eva.blocks) - 1}.", "fc_norm.", "head.", "attn_pool.")  # OmniLMM: last block off
    vision = sum(p.numel() for n, p in eva.named_parameters() if not n.startswith(dropped))
    d, kv = 4096, eva.embed_dim
    resampler = 64 * d + kv * d + (4 * d * d + 4 * d) + 3 * 2 * d + d * d  # query, kv_proj, attn, 3 norms, proj
    assert r["params"]["by_module"] == {"vision": vision, "connector": resampler, "llm": count(llm),
                                        "image_strategy": 0}
    assert r["params"]["total"] == vision + resampler + count(llm)
    assert r["image_tokens"] == 64 and r["image_input"] == [1, 3, 448, 448]
    assert r["params"]["trainable"] == resampler + count(llm)


def test_clip_qwen2_7b(registries) -> None:
    r = report(registries, "clip-qwen2-7b")
    with torch.device("meta"):
        clip = CLIPVisionModel(CLIPVisionConfig(**(CLIP_L_336 | {"image_size": 224})))
        qwen = Qwen2ForCausalLM(Qwen2Config(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                            num_attention_heads=28, num_key_value_heads=4, vocab_size=152064))
    mlp = (1024 * 3584 + 3584) + (3584 * 3584 + 3584)
    assert r["params"]["total"] == count(clip) - count(clip.post_layernorm) + mlp + count(qwen)
    assert r["image_tokens"] == 256
    # LoRA r=16 on every linear layer of each of the 28 blocks: r * (in + out) per layer
    h, kv, ff = 3584, 512, 18944
    lora = 28 * 16 * (2 * (h + h) + 2 * (h + kv) + 3 * (h + ff))
    assert r["params"]["trainable_by_module"] == {"vision": 0, "connector": mlp, "llm": lora, "image_strategy": 0}


def test_cli_inspect_json(capsys) -> None:
    import json

    from mmfw.cli.main import main

    assert main(["-q", "inspect", str(PRESETS / "llava-next-mistral-7b.yaml"), "--json", "--image-size", "336x1008",
                 "--set", "training.policy.vision_encoder=frozen"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["image_size"] == [336, 1008] and out["image_input"] == [4, 3, 336, 336]
    assert out["image_tokens"] == 576 + 72 * 25  # 3x1 tiles: 72 rows of 24 + newline
    assert out["params"]["trainable_by_module"]["vision"] == 0
    assert set(out["params"]["by_module"]) == {"vision", "connector", "llm", "image_strategy"}


@pytest.mark.parametrize("size", ["0x10", "10", "axb"])
def test_cli_rejects_bad_image_sizes(size, capsys) -> None:
    from mmfw.cli.main import main

    with pytest.raises(SystemExit):
        main(["inspect", str(PRESETS / "llava-1.5-7b.yaml"), "--image-size", size])
    assert "WIDTHxHEIGHT" in capsys.readouterr().err
