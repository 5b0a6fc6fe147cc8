"""SigLIP ViT vision encoder through transformers' ``SiglipVisionModel``.

SigLIP has no CLS token: every token is a patch. Features are the hidden states of ``feature_layer`` (penultimate by
default); the layers after it and the post-layernorm are removed as for CLIP (:mod:`mmfw.encoders.hf_vit`), and so is
the attention-pooling head, which only serves SigLIP's contrastive objective.

With ``interpolate_pos_encoding`` the position embeddings are interpolated (bicubic) to the patch grid of the input,
so any input size is accepted (sizes are floored to the patch size); otherwise the native size is required.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field
from typing_extensions import Self

from mmfw.config.base import StrictModel
from mmfw.encoders.hf_vit import HFViTEncoder, HFViTEncoderConfig
from mmfw.lazy import lazy_attr
from mmfw.registry import component

if TYPE_CHECKING:
    from transformers import PretrainedConfig

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


class SiglipEncoderConfig(HFViTEncoderConfig):
    type: Literal["siglip"] = "siglip"
    pretrained: str | None = None
    """Local directory or hub id of a SigLIP (or SigLIP vision) checkpoint."""
    architecture: SiglipArchitecture | None = None
    interpolate_pos_encoding: bool = False
    """Accept inputs of any size by interpolating the position embeddings (dynamic size)."""
    image_mean: tuple[float, float, float] = SIGLIP_MEAN
    image_std: tuple[float, float, float] = SIGLIP_STD

    @classmethod
    def example(cls) -> Self:
        return cls(architecture=SiglipArchitecture(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                                   num_hidden_layers=2, num_attention_heads=2),
                   interpolate_pos_encoding=True)


@component("siglip", config=SiglipEncoderConfig)
class SiglipVisionEncoder(HFViTEncoder):
    hf_config_class = lazy_attr("transformers:SiglipVisionConfig")
    hf_model_class = lazy_attr("transformers:SiglipVisionModel")
    cfg: SiglipEncoderConfig

    def __init__(self, cfg: SiglipEncoderConfig) -> None:
        super().__init__(cfg)
        tower = self.tower
        if getattr(tower, "use_head", False):  # the attention-pooling head serves the contrastive objective only
            tower.use_head = False
            del tower.head

    @classmethod
    def architecture_config(cls, cfg: SiglipEncoderConfig) -> PretrainedConfig:
        return cls.hf_config_class(**cfg.architecture.model_dump(), vision_use_head=False)

    @property
    def dynamic_size(self) -> bool:
        return self.cfg.interpolate_pos_encoding

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values.to(self.dtype), interpolate_pos_encoding=self.cfg.interpolate_pos_encoding)
        return out.last_hidden_state
