"""OpenCLIP: features equal the vision transformer's blocks run by hand up to ``feature_layer``, CLS dropped."""

from __future__ import annotations

import json
from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.model import _build_vision_tower
from pydantic import ValidationError

from mmfw.encoders.open_clip import OpenCLIPArchitecture, OpenCLIPEncoderConfig, OpenCLIPVisionEncoder

ARCH = dict(image_size=32, patch_size=8, width=32, layers=3, head_width=16, mlp_ratio=2.0)


def reference(model_name: str = "ViT-B-16") -> torch.nn.Module:
    torch.manual_seed(0)
    model_cfg = open_clip.get_model_config(model_name)
    return _build_vision_tower(model_cfg["embed_dim"], {**model_cfg["vision_cfg"], **ARCH},
                               quick_gelu=model_cfg.get("quick_gelu", False)).eval()


def manual_features(visual: torch.nn.Module, x: torch.Tensor, blocks: int) -> torch.Tensor:
    x = visual.conv1(x).flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + visual.positional_embedding
    x = visual.ln_pre(x)
    for blk in visual.transformer.resblocks[:blocks]:
        x = blk(x)
    return x[:, 1:]


def encoder_like(ref: torch.nn.Module, model_name: str = "ViT-B-16", **cfg) -> OpenCLIPVisionEncoder:
    enc = OpenCLIPVisionEncoder(OpenCLIPEncoderConfig(model_name=model_name,
                                                      architecture=OpenCLIPArchitecture(**ARCH), **cfg))
    enc.visual.load_state_dict(ref.state_dict(), strict=False)
    return enc.eval()


@pytest.mark.parametrize("model_name", ["ViT-B-16", "ViT-L-14-quickgelu"])
@pytest.mark.parametrize("feature_layer, blocks", [(-2, 2), (-1, 3), (1, 1)])
def test_features_are_the_output_of_feature_layer(model_name: str, feature_layer: int, blocks: int) -> None:
    ref = reference(model_name)
    enc = encoder_like(ref, model_name, feature_layer=feature_layer)
    assert len(enc.layer_groups()) == blocks
    x = torch.randn(2, 3, 32, 32)
    out = enc(x)
    torch.testing.assert_close(out, manual_features(ref, x, blocks))
    intermediates = ref.forward_intermediates(x, indices=[blocks - 1], intermediates_only=True, output_fmt="NLC")
    torch.testing.assert_close(out, intermediates["image_intermediates"][0])


def test_pooling_projection_and_patch_dropout_are_removed() -> None:
    enc = OpenCLIPVisionEncoder(OpenCLIPEncoderConfig.example())
    assert enc.visual.proj is None and enc.visual.attn_pool is None
    assert isinstance(enc.visual.ln_post, torch.nn.Identity) and isinstance(enc.visual.patch_dropout, torch.nn.Identity)


def test_weights_from_a_local_directory(tmp_path: Path) -> None:
    """``local-dir:`` (OpenCLIP's own layout: open_clip_config.json + checkpoint), preprocessing from its config."""
    torch.manual_seed(0)
    model_cfg = {"embed_dim": 16, "vision_cfg": ARCH,
                 "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}
    clip = open_clip.CLIP(**model_cfg).eval()
    torch.save(clip.state_dict(), tmp_path / "open_clip_pytorch_model.bin")
    (tmp_path / "open_clip_config.json").write_text(json.dumps(
        {"model_cfg": model_cfg, "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]}}))
    enc = OpenCLIPVisionEncoder(OpenCLIPEncoderConfig(model_name=f"local-dir:{tmp_path}")).eval()
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(enc(x), manual_features(clip.visual, x, blocks=2))
    assert enc.spec.mean == (0.5, 0.5, 0.5) and enc.spec.std == (0.25, 0.25, 0.25)
    assert not hasattr(enc, "text") and all(n.startswith("visual.") for n, _ in enc.named_parameters())


def test_config_errors() -> None:
    with pytest.raises(ValidationError, match="no model 'ViT-Q-14'"):
        OpenCLIPEncoderConfig(model_name="ViT-Q-14")
    with pytest.raises(ValidationError, match="random init only"):
        OpenCLIPEncoderConfig(pretrained="openai", architecture=OpenCLIPArchitecture(layers=2))
    with pytest.raises(ValidationError, match="names its own weights"):
        OpenCLIPEncoderConfig(model_name="hf-hub:org/repo", pretrained="openai")
    with pytest.raises(ValidationError, match="vit_so400m_patch14_siglip_224, not OpenCLIP's VisionTransformer"):
        OpenCLIPEncoderConfig(model_name="ViT-SO400M-14-SigLIP")
    with pytest.raises(ValidationError, match="not 0"):
        OpenCLIPEncoderConfig(feature_layer=0)
    with pytest.raises(ValueError, match="out of range for 3 blocks"):
        OpenCLIPVisionEncoder(OpenCLIPEncoderConfig(architecture=OpenCLIPArchitecture(**ARCH), feature_layer=-4))


def test_real_scale_vit_l_336_on_meta() -> None:
    with torch.device("meta"):
        enc = OpenCLIPVisionEncoder(OpenCLIPEncoderConfig(model_name="ViT-L-14-336"))
        assert enc.spec.image_size == (336, 336) and enc.embed_dim == 1024 and len(enc.layer_groups()) == 23
        assert enc(torch.empty(1, 3, 336, 336)).shape == (1, 576, 1024)
