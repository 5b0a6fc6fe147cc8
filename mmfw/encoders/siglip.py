"""SigLIP ViT vision encoder through transformers' ``SiglipVisionModel``.

SigLIP has no CLS token: every token is a patch. Features are the hidden states of ``feature_layer`` (penultimate by
default); the post-layernorm and the attention-pooling head, which only serve SigLIP's contrastive objective, are
removed together with the layers after ``feature_layer`` (no wasted compute, no parameter without a gradient).

With ``interpolate_pos_encoding`` the position embeddings are interpolated (bicubic) to the patch grid of the input,
so any input size is accepted (sizes are floored to the patch size); otherwise the native size is required.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from typing_extensions import Self

from mmfw.config.base import StrictModel, VisionEncoderConfig
from mmfw.config.input_checks import load_located
from mmfw.encoders.base import DType, VisionEncoder, VisionSpec, torch_dtype
from mmfw.registry import component

SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)


class SiglipArchitecture(StrictModel):
    """Random-init architecture (defaults: SigLIP So400m/14 at 384 px)."""

    image_size: int = Field(384, gt=0)
    patch_size: int = Field(14, gt=0)
    hidden_size: int = Field(1152, gt=0)
    intermediate_size: int = Field(4304, gt=0)
    num_hidden_layers: int = Field(27, gt=0)
    num_attention_heads: int = Field(16, gt=0)
    layer_norm_eps: float = Field(1e-6, gt=0)


class SiglipEncoderConfig(VisionEncoderConfig):
    type: Literal["siglip"] = "siglip"
    pretrained: str | None = None
    """Local directory or hub id of a SigLIP (or SigLIP vision) checkpoint."""
    architecture: SiglipArchitecture | None = None
    feature_layer: int = -2
    """Index into the hidden states (0 = embeddings, -1 = last layer)."""
    interpolate_pos_encoding: bool = False
    """Accept inputs of any size by interpolating the position embeddings (dynamic size)."""
    image_mean: tuple[float, float, float] = SIGLIP_MEAN
    image_std: tuple[float, float, float] = SIGLIP_STD
    dtype: DType = "float32"

    @model_validator(mode="after")
    def _source(self) -> SiglipEncoderConfig:
        if (self.pretrained is None) == (self.architecture is None):
            raise ValueError("set exactly one of 'pretrained' (weights) and 'architecture' (random init)")
        if self.architecture is not None:
            layers = self.architecture.num_hidden_layers
            if not -layers - 1 <= self.feature_layer <= layers:
                raise ValueError(f"feature_layer {self.feature_layer} out of range for {layers} layers")
        return self

    @classmethod
    def example(cls) -> Self:
        return cls(architecture=SiglipArchitecture(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                                   num_hidden_layers=2, num_attention_heads=2),
                   interpolate_pos_encoding=True)


@component("siglip", config=SiglipEncoderConfig)
class SiglipVisionEncoder(VisionEncoder):
    def __init__(self, cfg: SiglipEncoderConfig) -> None:
        super().__init__(cfg)
        from transformers import SiglipVisionConfig, SiglipVisionModel

        dtype = torch_dtype(cfg.dtype)
        if cfg.pretrained is not None:
            self.model = load_located("model.vision_encoder.pretrained", cfg.pretrained,
                                      SiglipVisionModel.from_pretrained, cfg.pretrained, dtype=dtype)
        else:
            arch = cfg.architecture.model_dump()
            self.model = SiglipVisionModel(SiglipVisionConfig(**arch, vision_use_head=False)).to(dtype)
        mc = self.model.config
        layers = mc.num_hidden_layers
        if not -layers - 1 <= cfg.feature_layer <= layers:
            raise ValueError(f"siglip: feature_layer {cfg.feature_layer} out of range for {layers} layers")
        keep = cfg.feature_layer % (layers + 1)
        tower = self.tower
        tower.encoder.layers = tower.encoder.layers[:keep]
        tower.post_layernorm = torch.nn.Identity()
        if getattr(tower, "use_head", False):
            tower.use_head = False
            del tower.head
        self._spec = VisionSpec(image_size=(mc.image_size, mc.image_size), patch_size=mc.patch_size,
                                mean=cfg.image_mean, std=cfg.image_std, embed_dim=mc.hidden_size,
                                dynamic_size=cfg.interpolate_pos_encoding)

    @property
    def spec(self) -> VisionSpec:
        return self._spec

    @property
    def tower(self) -> torch.nn.Module:
        """The vision transformer (``SiglipVisionModel`` itself in transformers v5, ``.vision_model`` before)."""
        return getattr(self.model, "vision_model", self.model)

    def layer_groups(self) -> list[torch.nn.Module]:
        return list(self.tower.encoder.layers)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values.to(self.dtype), interpolate_pos_encoding=self.cfg.interpolate_pos_encoding)
        return out.last_hidden_state
