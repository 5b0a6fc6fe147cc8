"""CLIP through transformers: features equal ``hidden_states[feature_layer][:, 1:]`` of the untouched model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from mmfw.encoders.clip import CLIPArchitecture, CLIPEncoderConfig, CLIPVisionEncoder

ARCH = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
            num_attention_heads=2, projection_dim=32)


def reference() -> CLIPVisionModel:
    torch.manual_seed(0)
    return CLIPVisionModel(CLIPVisionConfig(**ARCH)).eval()


@pytest.mark.parametrize("feature_layer", [-2, -1, 1, 0])
def test_features_are_the_hidden_states_without_cls(feature_layer: int) -> None:
    ref = reference()
    enc = CLIPVisionEncoder(CLIPEncoderConfig(architecture=CLIPArchitecture(**ARCH), feature_layer=feature_layer))
    enc.model.load_state_dict(ref.state_dict(), strict=False)
    enc.eval()
    x = torch.randn(2, 3, 32, 32)
    expected = ref(x, output_hidden_states=True).hidden_states[feature_layer][:, 1:]
    torch.testing.assert_close(enc(x), expected)


def test_pretrained_directory(tmp_path: Path) -> None:
    ref = reference()
    ref.save_pretrained(tmp_path)
    enc = CLIPVisionEncoder(CLIPEncoderConfig(pretrained=str(tmp_path))).eval()
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(enc(x), ref(x, output_hidden_states=True).hidden_states[-2][:, 1:])


def test_real_scale_vit_l_336_on_meta() -> None:
    with torch.device("meta"):
        enc = CLIPVisionEncoder(CLIPEncoderConfig(architecture=CLIPArchitecture()))
        assert enc.embed_dim == 1024 and len(enc.layer_groups()) == 23
        assert enc(torch.empty(1, 3, 336, 336)).shape == (1, 576, 1024)
