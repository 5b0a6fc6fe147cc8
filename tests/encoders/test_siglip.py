"""SigLIP through transformers: features equal ``hidden_states[feature_layer]`` of the untouched model (no CLS)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from transformers import SiglipVisionConfig, SiglipVisionModel

from mmfw.encoders.siglip import SiglipArchitecture, SiglipEncoderConfig, SiglipVisionEncoder

ARCH = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
            num_attention_heads=2)


def reference(use_head: bool = True) -> SiglipVisionModel:
    torch.manual_seed(0)
    return SiglipVisionModel(SiglipVisionConfig(**ARCH, vision_use_head=use_head)).eval()


def encoder_like(ref: SiglipVisionModel, **cfg) -> SiglipVisionEncoder:
    enc = SiglipVisionEncoder(SiglipEncoderConfig(architecture=SiglipArchitecture(**ARCH), **cfg))
    enc.model.load_state_dict(ref.state_dict(), strict=False)
    return enc.eval()


@pytest.mark.parametrize("feature_layer", [-2, -1, 1, 0])
def test_features_are_the_hidden_states_of_feature_layer(feature_layer: int) -> None:
    ref = reference()
    enc = encoder_like(ref, feature_layer=feature_layer)
    x = torch.randn(2, 3, 32, 32)
    expected = ref(x, output_hidden_states=True).hidden_states[feature_layer]
    torch.testing.assert_close(enc(x), expected)
    assert enc(x).shape == (2, 16, 32)  # every token is a patch


def test_interpolated_positions_for_other_sizes() -> None:
    ref = reference()
    enc = encoder_like(ref, interpolate_pos_encoding=True)
    assert enc.spec.dynamic_size and not enc.spec.pad_to_patch
    x = torch.randn(1, 3, 27, 50)
    expected = ref(x, interpolate_pos_encoding=True, output_hidden_states=True).hidden_states[-2]
    torch.testing.assert_close(enc(x), expected)
    assert enc(x).shape[1] == 3 * 6 == enc.spec.grid(27, 50)[0] * enc.spec.grid(27, 50)[1]


def test_unused_parts_are_removed() -> None:
    enc = SiglipVisionEncoder(SiglipEncoderConfig(architecture=SiglipArchitecture(**ARCH)))
    names = [n for n, _ in enc.named_parameters()]
    assert not any("head" in n or "post_layernorm" in n for n in names)
    assert len(enc.layer_groups()) == 2 and enc.spec.mean == enc.spec.std == (0.5, 0.5, 0.5)


def test_pretrained_directory_with_a_pooling_head(tmp_path: Path) -> None:
    ref = reference(use_head=True)
    ref.save_pretrained(tmp_path)
    enc = SiglipVisionEncoder(SiglipEncoderConfig(pretrained=str(tmp_path))).eval()
    assert not hasattr(enc.tower, "head")
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(enc(x), ref(x, output_hidden_states=True).hidden_states[-2])


def test_config_errors() -> None:
    with pytest.raises(ValidationError, match="exactly one of"):
        SiglipEncoderConfig()
    with pytest.raises(ValidationError, match="out of range"):
        SiglipEncoderConfig(architecture=SiglipArchitecture(**ARCH), feature_layer=5)


def test_real_scale_so400m_on_meta() -> None:
    with torch.device("meta"):
        enc = SiglipVisionEncoder(SiglipEncoderConfig(architecture=SiglipArchitecture()))
        assert enc.embed_dim == 1152 and len(enc.layer_groups()) == 26
        assert enc(torch.empty(1, 3, 384, 384)).shape == (1, 27 * 27, 1152)
