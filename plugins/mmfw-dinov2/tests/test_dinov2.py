"""The DINOv2 encoder keeps mmfw's contracts (through the kit), returns the right layer's patch rows (CLS and
register tokens dropped), loads checkpoints, and trains inside a VLM."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("mmfw_dinov2", reason="the mmfw-dinov2 plugin is not installed (pip install -e plugins/mmfw-dinov2)")
import torch
from mmfw_dinov2.encoder import DINOv2Architecture, DINOv2EncoderConfig
from PIL import Image
from pydantic import ValidationError
from transformers import (
    CLIPVisionConfig,
    CLIPVisionModel,
    Dinov2Config,
    Dinov2Model,
    Dinov2WithRegistersConfig,
    Dinov2WithRegistersModel,
)

from mmfw.config.experiment import ModelConfig
from mmfw.model.builder import build_model
from mmfw.testing import check_vision_encoder, installed_registries, missing_grads

TINY = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, mlp_ratio=2)


def config(registers: int = 2, **changes) -> DINOv2EncoderConfig:
    return DINOv2EncoderConfig(architecture=DINOv2Architecture(**TINY, num_register_tokens=registers), **changes)


@pytest.fixture(scope="module")
def registries():
    return installed_registries()


def test_registered_from_this_package(registries) -> None:
    assert registries.vision_encoders.entry("dinov2").source.startswith("mmfw-dinov2:dinov2 (mmfw_dinov2.encoder.")


@pytest.mark.parametrize("cfg", [None, config(registers=0), config(registers=0, final_norm=True, feature_layer=-1)],
                         ids=["example-with-registers", "no-registers", "final-norm"])
def test_keeps_every_contract(cfg) -> None:
    checked = check_vision_encoder(cfg or "dinov2")
    assert {"output-shape", "dynamic-sizes", "gradients", "image-tokens", "vlm-gradients", "meta-build"} <= set(checked)
    # the export contract applies (transformers reloads it and gives the same logits) unless registers or the final
    # norm rule the Llava mapping out
    mappable = cfg is not None and cfg.architecture.num_register_tokens == 0 and not cfg.final_norm
    assert ("export" in checked) == mappable


def reference(cfg: DINOv2EncoderConfig, state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """transformers' full model (every layer, final norm, mask token) with the encoder's weights."""
    arch = cfg.architecture.model_dump()
    if arch["num_register_tokens"]:
        model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**arch))
    else:
        del arch["num_register_tokens"]
        model = Dinov2Model(Dinov2Config(**arch))
    missing, _ = model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()}, strict=False)
    assert all(k.startswith(("encoder.layer.", "layernorm.", "embeddings.mask_token")) for k in missing), missing
    return model.eval()


@pytest.mark.parametrize(("registers", "feature_layer", "final_norm"),
                         [(2, -2, False), (0, -2, False), (4, 1, False), (2, -1, True)])
def test_features_are_the_patch_rows_of_the_feature_layer(registries, registers, feature_layer, final_norm) -> None:
    cfg = config(registers, feature_layer=feature_layer, final_norm=final_norm)
    torch.manual_seed(0)
    enc = registries.vision_encoders.build(cfg).eval()
    keep = feature_layer % (TINY["num_hidden_layers"] + 1)
    assert len(enc.layer_groups()) == keep
    ref = reference(cfg, enc.state_dict())
    with torch.no_grad():
        x = torch.randn(2, 3, 40, 24)  # 5x3 patches, not the native size: position embeddings interpolated
        hidden = ref(x, output_hidden_states=True).hidden_states[feature_layer]
        if final_norm:
            hidden = ref.layernorm(hidden)
        ours = enc(x)
    assert ours.shape == (2, 15, 32)
    torch.testing.assert_close(ours, hidden[:, 1 + registers:])


def test_unused_parts_are_removed(registries) -> None:
    enc = registries.vision_encoders.build(config(2))
    names = [n for n, _ in enc.named_parameters()]
    assert not any("mask_token" in n or n.startswith("model.layernorm.") for n in names)
    assert any("register_tokens" in n for n in names)


def test_feature_layer_out_of_range_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match=r"feature_layer 4 out of range for 3 layers \(valid: -4..3\)"):
        config(feature_layer=4)
    with pytest.raises(ValidationError, match="set exactly one of 'pretrained'"):
        DINOv2EncoderConfig()


@pytest.mark.parametrize("registers", [0, 4])
def test_pretrained_loads_a_local_checkpoint(registries, tmp_path: Path, registers: int) -> None:
    arch = dict(TINY, num_hidden_layers=2)
    torch.manual_seed(1)
    if registers:
        saved = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**arch, num_register_tokens=registers))
    else:
        saved = Dinov2Model(Dinov2Config(**arch))
    saved.eval().save_pretrained(tmp_path)
    enc = registries.vision_encoders.build(DINOv2EncoderConfig(pretrained=str(tmp_path), feature_layer=-1)).eval()
    assert enc.num_prefix_tokens == 1 + registers and enc.spec.image_size == (32, 32) and enc.spec.dynamic_size
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(enc(x), saved(x, output_hidden_states=True).hidden_states[-1][:, 1 + registers:])


def test_pretrained_of_another_model_type_is_named(registries, tmp_path: Path) -> None:
    CLIPVisionModel(CLIPVisionConfig(**{k: TINY[k] for k in ("image_size", "patch_size", "hidden_size",
                                                              "num_attention_heads")}, intermediate_size=64,
                                     num_hidden_layers=1)).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"is a 'clip_vision_model' checkpoint, not one of dinov2, "
                                         r"dinov2_with_registers"):
        registries.vision_encoders.build(DINOv2EncoderConfig(pretrained=str(tmp_path)))


def test_a_vlm_with_dinov2_learns_an_image_caption(registries) -> None:
    """DINOv2 (with registers) + MLP + Llama over anyres tiles: the loss on a fixed image/caption pair falls, and every
    parameter of the whole model gets a gradient."""
    from mmfw.testing import tiny_tokenizer_dir

    cfg = ModelConfig(vision_encoder=config(2), connector=registries.connectors.config_class("mlp").example(),
                      llm=registries.llms.config_class("llama").example(tokenizer=str(tiny_tokenizer_dir())),
                      image_strategy=registries.image_strategies.config_class("anyres").example())
    torch.manual_seed(0)
    vlm, tok = build_model(cfg, registries)
    image = vlm.image_strategy.preprocess(Image.new("RGB", (70, 30), "red"))
    n = vlm.image_strategy.num_tokens(image.size)
    assert image.pixel_values.shape[0] > 1  # several tiles
    ids = torch.tensor([[vlm.image_token_id] * n + tok.encode(" a red square", add_special_tokens=False)])
    labels = ids.clone()
    labels[:, :n] = -100
    inputs = dict(input_ids=ids, labels=labels, pixel_values=image.pixel_values,
                  image_sizes=torch.tensor([image.size]), num_tiles=torch.tensor([image.pixel_values.shape[0]]))
    opt = torch.optim.AdamW(vlm.parameters(), lr=3e-3)
    losses = []
    for step in range(12):
        opt.zero_grad()
        loss = vlm(**inputs).loss
        loss.backward()
        if step == 0:
            assert missing_grads(vlm.named_parameters()) == []
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0], losses
