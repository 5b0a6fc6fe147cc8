"""EVA02 through timm: the features are timm's blocks run by hand up to ``feature_layer`` (OmniLMM's penultimate)."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from pydantic import ValidationError
from timm.models import save_for_hf

from mmfw.encoders.eva02 import EVA02Architecture, EVA02EncoderConfig, EVA02VisionEncoder

TINY = dict(img_size=32, patch_size=8, embed_dim=32, depth=3, num_heads=2, mlp_ratio=2.0)
VARIANTS = ["eva02_enormous_patch14_clip_224", "eva02_tiny_patch14_224"]  # abs pos + post-norm; RoPE + SwiGLU


class KwargsIdentity(torch.nn.Identity):
    """OmniLMM's ``Identity``: timm calls blocks with keyword arguments (``rope=...``)."""

    def forward(self, input: torch.Tensor, **kwargs) -> torch.Tensor:
        return input


def reference(model_name: str) -> torch.nn.Module:
    """The whole timm model, as OmniLMM creates it."""
    return timm.create_model(model_name, pretrained=False, num_classes=0, dynamic_img_size=True,
                             dynamic_img_pad=True, **TINY).eval()


def manual_features(ref: torch.nn.Module, x: torch.Tensor, blocks: int, norm: bool = True) -> torch.Tensor:
    x = ref.patch_embed(x)
    x, rope = ref._pos_embed(x)
    x = ref.norm_pre(x)
    for blk in ref.blocks[:blocks]:
        x = blk(x, rope=rope)
    if norm:
        x = ref.norm(x)
    return x[:, ref.num_prefix_tokens:]


def encoder_like(ref: torch.nn.Module, model_name: str, **cfg) -> EVA02VisionEncoder:
    enc = EVA02VisionEncoder(EVA02EncoderConfig(model_name=model_name, architecture=EVA02Architecture(**TINY), **cfg))
    enc.model.load_state_dict(ref.state_dict(), strict=False)  # ours lacks the removed blocks
    return enc.eval()


@pytest.mark.parametrize("model_name", VARIANTS)
@pytest.mark.parametrize("size", [(32, 32), (24, 40), (37, 19)], ids=str)
def test_default_features_are_the_penultimate_block(model_name: str, size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    ref = reference(model_name)
    enc = encoder_like(ref, model_name)
    x = torch.randn(2, 3, *size)
    out = enc(x)
    torch.testing.assert_close(out, manual_features(ref, x, blocks=2))
    rows, cols = enc.spec.grid(*size)
    assert out.shape == (2, rows * cols, 32)
    # OmniLMM's own way: last block replaced by its kwargs-tolerant Identity, forward_features, prefix dropped
    ref.blocks[-1] = KwargsIdentity()
    torch.testing.assert_close(out, ref.forward_features(x)[:, ref.num_prefix_tokens:])


@pytest.mark.parametrize("feature_layer, blocks", [(-1, 3), (1, 1), (-3, 1), (2, 2)])
def test_feature_layer_selects_and_truncates(feature_layer: int, blocks: int) -> None:
    torch.manual_seed(0)
    ref = reference(VARIANTS[0])
    enc = encoder_like(ref, VARIANTS[0], feature_layer=feature_layer)
    assert len(enc.layer_groups()) == blocks
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(enc(x), manual_features(ref, x, blocks=blocks))


def test_final_norm_can_be_left_out() -> None:
    torch.manual_seed(0)
    ref = reference(VARIANTS[0])
    enc = encoder_like(ref, VARIANTS[0], final_norm=False)
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(enc(x), manual_features(ref, x, blocks=2, norm=False))


def test_head_is_removed() -> None:
    enc = EVA02VisionEncoder(EVA02EncoderConfig.example())
    assert getattr(enc.model, "attn_pool", None) is None
    assert isinstance(enc.model.head, torch.nn.Identity) and isinstance(enc.model.fc_norm, torch.nn.Identity)


def test_pretrained_from_a_local_checkpoint_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    full = timm.create_model(VARIANTS[0], pretrained=False, num_classes=1024, **TINY).eval()  # with its CLIP head
    torch.save(full.state_dict(), tmp_path / "eva02.pth")
    enc = EVA02VisionEncoder(EVA02EncoderConfig(pretrained=str(tmp_path / "eva02.pth"),
                                                architecture=EVA02Architecture(**TINY))).eval()
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(enc(x), manual_features(full, x, blocks=2))


def test_pretrained_from_a_timm_model_folder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ref = reference(VARIANTS[1])
    save_for_hf(ref, tmp_path, model_args=TINY)  # timm's folder layout: config.json + weights
    enc = EVA02VisionEncoder(EVA02EncoderConfig(model_name=f"local-dir:{tmp_path}", pretrained=True)).eval()
    x = torch.randn(1, 3, 24, 40)
    torch.testing.assert_close(enc(x), manual_features(ref, x, blocks=2))


def test_missing_checkpoint_file_is_named() -> None:
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        EVA02VisionEncoder(EVA02EncoderConfig(pretrained="/nowhere.pth", architecture=EVA02Architecture(**TINY)))


def test_config_errors() -> None:
    with pytest.raises(ValidationError, match="did you mean 'eva02_large_patch14_224'"):
        EVA02EncoderConfig(model_name="eva02_lage_patch14_224")
    with pytest.raises(ValidationError, match="out of range for 3 blocks"):
        EVA02EncoderConfig(architecture=EVA02Architecture(depth=3), feature_layer=-4)
    with pytest.raises(ValidationError, match="not 0"):
        EVA02EncoderConfig(feature_layer=0)


def test_mean_std_from_timm_or_config() -> None:
    enc = EVA02VisionEncoder(EVA02EncoderConfig.example())
    assert enc.spec.mean == tuple(timm.get_pretrained_cfg(VARIANTS[0]).mean)
    cfg = EVA02EncoderConfig.example().model_copy(update={"image_mean": (0.5, 0.5, 0.5), "image_std": (0.5,) * 3})
    assert EVA02VisionEncoder(cfg).spec.std == (0.5, 0.5, 0.5)


def test_real_scale_omnilmm_tower_on_meta() -> None:
    """OmniLMM's tower: EVA02-E/14 at 224, 63 of 64 blocks kept, 16 x 16 patches of width 1792."""
    with torch.device("meta"):
        enc = EVA02VisionEncoder(EVA02EncoderConfig(model_name="eva02_enormous_patch14_clip_224.laion2b_plus"))
        assert enc.spec.image_size == (224, 224) and enc.spec.patch_size == 14 and enc.embed_dim == 1792
        assert len(enc.layer_groups()) == 63
        assert 4.2e9 < sum(p.numel() for p in enc.parameters()) < 4.3e9
        assert enc(torch.empty(1, 3, 224, 224)).shape == (1, 256, 1792)
