"""CLIP ViT vision encoder through transformers' ``CLIPVisionModel`` (LLaVA's vision tower).

Features come from the hidden states of ``feature_layer`` (the penultimate layer by default, as in LLaVA), with the
CLS token dropped, so one row per patch. Layers after ``feature_layer`` and the post-layernorm never influence the
output, so they are removed (as OmniLMM does for EVA02): no wasted compute, and no parameter without a gradient
(which DDP would reject).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field, model_validator
from typing_extensions import Self

from mmfw.config.base import StrictModel, VisionEncoderConfig
from mmfw.config.input_checks import load_located
from mmfw.encoders.base import DType, VisionEncoder, VisionSpec, torch_dtype
from mmfw.registry import component

if TYPE_CHECKING:
    from mmfw.export.hf_llava import HFLlavaPart

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


class CLIPEncoderConfig(VisionEncoderConfig):
    type: Literal["clip"] = "clip"
    pretrained: str | None = None
    """Local directory or hub id of a CLIP (or CLIP vision) checkpoint."""
    architecture: CLIPArchitecture | None = None
    feature_layer: int = -2
    """Index into the hidden states (0 = embeddings, -1 = last layer)."""
    image_mean: tuple[float, float, float] = OPENAI_CLIP_MEAN
    image_std: tuple[float, float, float] = OPENAI_CLIP_STD
    dtype: DType = "float32"

    @classmethod
    def example(cls) -> Self:
        return cls(architecture=CLIPArchitecture(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                                 num_hidden_layers=2, num_attention_heads=2, projection_dim=32))

    @model_validator(mode="after")
    def _source(self) -> CLIPEncoderConfig:
        if (self.pretrained is None) == (self.architecture is None):
            raise ValueError("set exactly one of 'pretrained' (weights) and 'architecture' (random init)")
        if self.architecture is not None:
            layers = self.architecture.num_hidden_layers
            if not -layers - 1 <= self.feature_layer <= layers:
                raise ValueError(f"feature_layer {self.feature_layer} out of range for {layers} layers")
        return self


@component("clip", config=CLIPEncoderConfig)
class CLIPVisionEncoder(VisionEncoder):
    def __init__(self, cfg: CLIPEncoderConfig) -> None:
        super().__init__(cfg)
        from transformers import CLIPVisionConfig, CLIPVisionModel

        dtype = torch_dtype(cfg.dtype)
        if cfg.pretrained is not None:
            self.model = load_located("model.vision_encoder.pretrained", cfg.pretrained,
                                      CLIPVisionModel.from_pretrained, cfg.pretrained, dtype=dtype)
        else:
            self.model = CLIPVisionModel(CLIPVisionConfig(**cfg.architecture.model_dump())).to(dtype)
        mc = self.model.config
        keep = cfg.feature_layer % (mc.num_hidden_layers + 1)
        if not -mc.num_hidden_layers - 1 <= cfg.feature_layer <= mc.num_hidden_layers:
            raise ValueError(f"feature_layer {cfg.feature_layer} out of range for {mc.num_hidden_layers} layers")
        tower = self.tower
        tower.encoder.layers = tower.encoder.layers[:keep]
        tower.post_layernorm = torch.nn.Identity()
        self.num_layers_kept = keep
        self._spec = VisionSpec(image_size=(mc.image_size, mc.image_size), patch_size=mc.patch_size,
                                mean=cfg.image_mean, std=cfg.image_std, embed_dim=mc.hidden_size)

    @property
    def spec(self) -> VisionSpec:
        return self._spec

    @property
    def tower(self) -> torch.nn.Module:
        """The vision transformer (``CLIPVisionModel`` itself in transformers v5, ``.vision_model`` before)."""
        return getattr(self.model, "vision_model", self.model)

    def layer_groups(self) -> list[torch.nn.Module]:
        return list(self.tower.encoder.layers)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values.to(self.dtype))
        return out.last_hidden_state[:, 1:]

    def hf_llava_export(self) -> HFLlavaPart:
        """transformers' Llava vision tower: the kept layers, features from the last of them, CLS dropped
        (``vision_feature_select_strategy="default"``). The post-layernorm never reaches the features; it is
        exported as the identity."""
        from mmfw.export.hf_llava import ExportError, HFLlavaPart, prefixed

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
