"""CLIP ViT vision encoder through transformers' ``CLIPVisionModel`` (LLaVA's vision tower).

Features come from the hidden states of ``feature_layer`` (the penultimate layer by default, as in LLaVA), with the
CLS token dropped, so one row per patch; the layers after it are removed (see :mod:`mmfw.encoders.hf_vit`, the base
shared with SigLIP).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from typing_extensions import Self

from mmfw.config.base import StrictModel
from mmfw.encoders.hf_vit import HFViTEncoder, HFViTEncoderConfig
from mmfw.errors import ExportError
from mmfw.interop import HFLlavaPart, prefixed
from mmfw.lazy import lazy_attr
from mmfw.registry import component

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class CLIPArchitecture(StrictModel):
    """Random-init architecture (defaults: ViT-L/14 at 336 px)."""

    image_size: int = Field(336, gt=0)
    patch_size: int = Field(14, gt=0)
    hidden_size: int = Field(1024, gt=0)
    intermediate_size: int = Field(4096, gt=0)
    num_hidden_layers: int = Field(24, gt=0)
    num_attention_heads: int = Field(16, gt=0)
    projection_dim: int = Field(768, gt=0)
    initializer_factor: float = Field(1.0, gt=0)
    """Scale of the random initialisation (transformers' ``CLIPVisionConfig.initializer_factor``). Small towers
    trained from scratch leave their loss plateau much sooner at 2-3 than at the default 1 (see docs/quickstart.md)."""


class CLIPEncoderConfig(HFViTEncoderConfig):
    type: Literal["clip"] = "clip"
    pretrained: str | None = None
    """Local directory or hub id of a CLIP (or CLIP vision) checkpoint."""
    architecture: CLIPArchitecture | None = None
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD

    @classmethod
    def example(cls) -> Self:
        return cls(architecture=CLIPArchitecture(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                                 num_hidden_layers=2, num_attention_heads=2, projection_dim=32))


@component("clip", config=CLIPEncoderConfig)
class CLIPVisionEncoder(HFViTEncoder):
    hf_config_class = lazy_attr("transformers:CLIPVisionConfig")
    hf_model_class = lazy_attr("transformers:CLIPVisionModel")

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values.to(self.dtype))
        return out.last_hidden_state[:, 1:]

    def hf_llava_export(self) -> HFLlavaPart:
        """transformers' Llava vision tower: the kept layers, features from the last of them, CLS dropped
        (``vision_feature_select_strategy="default"``). The post-layernorm never reaches the features; it is
        exported as the identity."""
        layers = len(self.tower.encoder.layers)
        if layers == 0:
            raise ExportError("feature_layer 0 (the embeddings) has no transformers Llava counterpart")
        state = {k: v for k, v in self.tower.state_dict().items() if not k.startswith("post_layernorm.")}
        width = self.model.config.hidden_size
        ref = state["pre_layrnorm.weight"]
        state["post_layernorm.weight"] = torch.ones(width, dtype=ref.dtype, device=ref.device)
        state["post_layernorm.bias"] = torch.zeros(width, dtype=ref.dtype, device=ref.device)
        vision_config = self.model.config.to_dict() | {"num_hidden_layers": layers}
        return HFLlavaPart(
            config={"vision_config": vision_config, "vision_feature_layer": -1,
                    "vision_feature_select_strategy": "default"},
            weights=prefixed(state, "model.vision_tower."),
            processor={"patch_size": self.spec.patch_size, "vision_feature_select_strategy": "default",
                       "num_additional_image_tokens": 1})
