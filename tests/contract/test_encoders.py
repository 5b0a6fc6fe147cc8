"""Vision-encoder contract, for every registered encoder built from its ``example()`` config.

Rows out = the patch grid its ``spec`` announces (at the native size and, for dynamic-size encoders, at non-native,
non-square sizes), width = ``spec.embed_dim``, gradients reach every trainable parameter, ``dtype`` is obeyed.
"""

from __future__ import annotations

import pytest
import torch
from contract_utils import example_config, missing_grads

from mmfw.components import Registries
from mmfw.encoders.base import VisionEncoder


@pytest.fixture
def encoder(registries: Registries, encoder_name: str) -> VisionEncoder:
    torch.manual_seed(0)
    return registries.vision_encoders.build(example_config(registries, "vision_encoders", encoder_name))


def expected_shape(encoder: VisionEncoder, n: int, height: int, width: int) -> tuple[int, int, int]:
    rows, cols = encoder.spec.grid(height, width)
    return (n, rows * cols, encoder.spec.embed_dim)


def test_spec_is_sane(encoder: VisionEncoder) -> None:
    spec = encoder.spec
    assert len(spec.mean) == 3 and len(spec.std) == 3 and min(spec.std) > 0
    assert min(spec.image_size) >= spec.patch_size > 0
    assert encoder.embed_dim == spec.embed_dim > 0


def test_native_size_rows_match_the_spec(encoder: VisionEncoder) -> None:
    h, w = encoder.spec.image_size
    out = encoder(torch.randn(2, 3, h, w))
    assert out.shape == expected_shape(encoder, 2, h, w)
    assert torch.isfinite(out).all()


def test_dynamic_sizes_rows_match_the_spec(encoder: VisionEncoder) -> None:
    if not encoder.spec.dynamic_size:
        pytest.skip("fixed-size encoder")
    p = encoder.spec.patch_size
    for h, w in [(3 * p, 5 * p), (5 * p + 3, 2 * p - 1), (p, 7 * p)]:
        out = encoder(torch.randn(1, 3, h, w))
        assert out.shape == expected_shape(encoder, 1, h, w), (h, w)


def test_samples_are_independent(encoder: VisionEncoder) -> None:
    h, w = encoder.spec.image_size
    x = torch.randn(2, 3, h, w)
    encoder.eval()
    torch.testing.assert_close(encoder(x)[1:], encoder(x[1:]), atol=1e-5, rtol=1e-4)


def test_gradients_reach_every_trainable_parameter(encoder: VisionEncoder) -> None:
    h, w = encoder.spec.image_size
    encoder.train()
    encoder(torch.randn(2, 3, h, w)).pow(2).mean().backward()
    assert missing_grads(encoder.named_parameters()) == []


def test_bfloat16_config_gives_bfloat16_parameters_and_outputs(registries: Registries, encoder_name: str) -> None:
    cfg = example_config(registries, "vision_encoders", encoder_name)
    assert "dtype" in type(cfg).model_fields, "vision encoder configs have a dtype field"
    cfg = type(cfg).model_validate({**cfg.model_dump(), "dtype": "bfloat16"})
    encoder = registries.vision_encoders.build(cfg)
    assert {p.dtype for p in encoder.parameters() if p.is_floating_point()} == {torch.bfloat16}
    assert encoder.dtype == torch.bfloat16
    h, w = encoder.spec.image_size
    out = encoder(torch.randn(1, 3, h, w))  # float32 pixels are cast by the encoder
    assert out.dtype == torch.bfloat16 and out.shape == expected_shape(encoder, 1, h, w)


def test_layer_groups_are_distinct_submodules(encoder: VisionEncoder) -> None:
    groups = encoder.layer_groups()
    assert groups, "layer_groups() lists the transformer blocks"
    modules = {id(m) for m in encoder.modules()}
    assert all(id(g) in modules for g in groups)
    assert len({id(g) for g in groups}) == len(groups)


def test_state_dict_round_trip(registries: Registries, encoder_name: str, encoder: VisionEncoder) -> None:
    torch.manual_seed(1)
    other = registries.vision_encoders.build(example_config(registries, "vision_encoders", encoder_name))
    other.load_state_dict(encoder.state_dict())
    h, w = encoder.spec.image_size
    x = torch.randn(1, 3, h, w)
    encoder.eval(), other.eval()
    torch.testing.assert_close(other(x), encoder(x))
