"""The kit fails a component that breaks a contract, with a message naming the component, the contract and the fix.

Each broken component below is a working built-in with one promise broken, registered into fresh registries (never
the process-wide ones), so the failure can only come from that promise.
"""

from __future__ import annotations

import re
from typing import Literal

import pytest
import torch
from pydantic import ConfigDict, Field

from mmfw.components import Registries, collect_registries, make_plugin_manager
from mmfw.config.base import ComponentConfig
from mmfw.connectors.mlp import MLPConnector, MLPConnectorConfig
from mmfw.encoders.clip import CLIPEncoderConfig, CLIPVisionEncoder
from mmfw.image_strategies.resize import ResizeStrategy, ResizeStrategyConfig
from mmfw.registry import UnknownComponentError, component
from mmfw.testing import (
    ComponentUnderTest,
    ContractViolation,
    check_component,
    check_connector,
    check_image_strategy,
    check_vision_encoder,
    contracts,
)


class ExtraTokenConfig(MLPConnectorConfig):
    type: Literal["extra-token"] = "extra-token"


@component("extra-token", config=ExtraTokenConfig)
class ExtraTokenConnector(MLPConnector):
    """Appends a summary token that ``num_tokens`` does not count."""

    def forward(self, features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        out = super().forward(features, grid)
        return torch.cat([out, out.mean(dim=1, keepdim=True)], dim=1)


class UnusedHeadConfig(CLIPEncoderConfig):
    type: Literal["unused-head"] = "unused-head"


@component("unused-head", config=UnusedHeadConfig)
class UnusedHeadEncoder(CLIPVisionEncoder):
    """Keeps a head that never reaches the features."""

    def __init__(self, cfg: UnusedHeadConfig) -> None:
        super().__init__(cfg)
        self.head = torch.nn.Linear(self.embed_dim, 3)


class KeepsCLSConfig(CLIPEncoderConfig):
    type: Literal["keeps-cls"] = "keeps-cls"


@component("keeps-cls", config=KeepsCLSConfig)
class KeepsCLSEncoder(CLIPVisionEncoder):
    """Returns the CLS token with the patches."""

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values.to(self.dtype)).last_hidden_state


class WrongLayerExportConfig(CLIPEncoderConfig):
    type: Literal["wrong-layer-export"] = "wrong-layer-export"


@component("wrong-layer-export", config=WrongLayerExportConfig)
class WrongLayerExportEncoder(CLIPVisionEncoder):
    """Its transformers mapping reads the hidden states one layer too early."""

    def hf_llava_export(self):
        part = super().hf_llava_export()
        part.config["vision_feature_layer"] = -2
        return part


class UndercountConfig(ResizeStrategyConfig):
    type: Literal["undercount"] = "undercount"


@component("undercount", config=UndercountConfig)
class UndercountStrategy(ResizeStrategy):
    """Says one token less than the image becomes."""

    def num_tokens(self, size: tuple[int, int]) -> int:
        return super().num_tokens(size) - 1


class LaxConfig(MLPConnectorConfig):
    model_config = ConfigDict(extra="ignore")
    type: Literal["lax"] = "lax"


@component("lax", config=LaxConfig)
class LaxConnector(MLPConnector):
    """Silently ignores unknown config keys."""


class ForgetfulConfig(MLPConnectorConfig):
    type: Literal["forgetful"] = "forgetful"
    scale: float = Field(1.0, exclude=True)

    @classmethod
    def example(cls) -> ForgetfulConfig:
        return cls(scale=2.0)


@component("forgetful", config=ForgetfulConfig)
class ForgetfulConnector(MLPConnector):
    """Its config leaves a field out of its dump: a saved run would rebuild it differently."""


@pytest.fixture(scope="module")
def broken() -> Registries:
    regs = collect_registries(make_plugin_manager(load_entry_points=False))
    regs.connectors.register(ExtraTokenConnector)
    regs.connectors.register(LaxConnector)
    regs.connectors.register(ForgetfulConnector)
    regs.vision_encoders.register(UnusedHeadEncoder)
    regs.vision_encoders.register(KeepsCLSEncoder)
    regs.vision_encoders.register(WrongLayerExportEncoder)
    regs.image_strategies.register(UndercountStrategy)
    return regs


def violation(run, **kwargs) -> ContractViolation:
    with pytest.raises(ContractViolation) as info:
        run(**kwargs)
    return info.value


def test_uncounted_connector_token_names_both_counts_and_the_fix(broken: Registries, tokenizer_dir) -> None:
    err = violation(check_connector, component="extra-token", registries=broken, tokenizer_dir=tokenizer_dir)
    assert ("connector 'extra-token': token-count: forward returned 17 tokens per image for grid (4, 4) but "
            "num_tokens((4, 4)) says 16: num_tokens must return what forward produces") in err.violations
    # the whole model trips on it too: the fusion finds one row more than <image> placeholders
    assert any(v.startswith("connector 'extra-token': image-tokens: ") for v in err.violations)
    passed = [c.name for c in contracts("connectors") if not any(f": {c.name}: " in v for v in err.violations)]
    assert {"classes", "config-round-trip", "widths", "gradients"} <= set(passed)


def test_unused_parameter_is_named_with_the_fix(broken: Registries, tokenizer_dir) -> None:
    err = violation(check_vision_encoder, component="unused-head", registries=broken, tokenizer_dir=tokenizer_dir,
                    only=["gradients", "vlm-gradients", "output-shape"])
    assert len(err.violations) == 2
    assert err.violations[0] == ("vision encoder 'unused-head': gradients: trainable parameters head.weight, "
                                 "head.bias received no gradient: every trainable parameter must take part in "
                                 "forward: delete the parts after the feature layer (heads, final norms) or freeze "
                                 "them")
    assert err.violations[1].startswith("vision encoder 'unused-head': vlm-gradients: trainable parameters "
                                        "vision_encoder.head.weight, vision_encoder.head.bias received no gradient")
    assert str(err).startswith("vision encoder 'unused-head' breaks 2 of 3 contracts:\n- ")


def test_cls_token_in_the_features_breaks_the_shape_contract(broken: Registries, tokenizer_dir) -> None:
    cut = ComponentUnderTest("vision_encoders", "keeps-cls", registries=broken, tokenizer_dir=tokenizer_dir)
    with pytest.raises(ContractViolation, match=re.escape(
            "vision encoder 'keeps-cls': output-shape: forward of 2 images of 32x32 pixels returned shape (2, 17, 32) "
            "but the spec announces (2, 16, 32) (a 4x4 patch grid of width 32): forward must return one row per "
            "patch (drop CLS/register tokens)")):
        cut.check("output-shape")
    cut.check("gradients")  # the other promises still hold


def test_strategy_token_count_is_checked_on_the_whole_model(broken: Registries, tokenizer_dir) -> None:
    err = violation(check_image_strategy, component="undercount", registries=broken, tokenizer_dir=tokenizer_dir,
                    only=["image-tokens", "preprocess"])
    assert err.violations == [
        "image strategy 'undercount': image-tokens: a 45x30 image gave (16, 48) feature rows but "
        "image_strategy.num_tokens((45, 30)) says 15 (LLM width 48): num_tokens must count what the encoder, "
        "connector.num_tokens and merge produce"]


def test_export_mapping_must_reproduce_the_model(broken: Registries, tokenizer_dir) -> None:
    err = violation(check_vision_encoder, component="wrong-layer-export", registries=broken,
                    tokenizer_dir=tokenizer_dir, only=["export", "output-shape"])
    assert len(err.violations) == 1
    assert re.fullmatch(
        r"vision encoder 'wrong-layer-export': export: the hf-llava export, reloaded by transformers, gives logits up "
        r"to [0-9.e-]+ away from the mmfw model's on the same image and text: the mapping must reproduce the "
        r"component: .*", err.violations[0])


def test_lax_config_breaks_strictness(broken: Registries, tokenizer_dir) -> None:
    err = violation(check_connector, component="lax", registries=broken, tokenizer_dir=tokenizer_dir,
                    only=["config-strict"])
    assert err.violations == ["connector 'lax': config-strict: an unknown key 'no_such_field' was accepted: keep "
                              "extra='forbid' (subclass the mmfw config base)"]


def test_config_that_does_not_round_trip(broken: Registries, tokenizer_dir) -> None:
    err = violation(check_connector, component="forgetful", registries=broken, tokenizer_dir=tokenizer_dir,
                    only=["config-round-trip", "config-strict"])
    assert len(err.violations) == 1
    assert err.violations[0].startswith("connector 'forgetful': config-round-trip: the config loaded from its dump "
                                        "differs: ")
    assert err.violations[0].endswith(": fields must dump to values that load back equal (use pydantic types, no "
                                      "custom objects)")


def test_a_given_config_is_checked_instead_of_the_example(broken: Registries, tokenizer_dir) -> None:
    cfg = broken.connectors.config_class("mlp")(depth=3)
    assert "token-count" in check_component("connectors", cfg, registries=broken, tokenizer_dir=tokenizer_dir,
                                            only=["token-count", "config-round-trip"])


def test_unknown_names_are_clear_errors(broken: Registries) -> None:
    with pytest.raises(UnknownComponentError, match="did you mean 'extra-token'"):
        ComponentUnderTest("connectors", "extra-tokens", registries=broken)
    with pytest.raises(ValueError, match="no contract 'token-counts' for connectors; valid: classes"):
        ComponentUnderTest("connectors", "mlp", registries=broken).check("token-counts")
    with pytest.raises(ValueError, match="unknown component kind 'connector'"):
        ComponentUnderTest("connector", "mlp", registries=broken)


def test_missing_example_is_a_clear_error() -> None:
    class NoExampleConfig(ComponentConfig):
        type: str = "no-example"

    with pytest.raises(NotImplementedError, match="NoExampleConfig does not implement example"):
        NoExampleConfig.example()


def test_the_kit_imports_without_pytest() -> None:
    import subprocess
    import sys

    code = ("import sys; sys.modules['pytest'] = None; import mmfw.testing as t; "
            "print(len(t.contracts('connectors')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert int(out.stdout.strip()) >= 10
