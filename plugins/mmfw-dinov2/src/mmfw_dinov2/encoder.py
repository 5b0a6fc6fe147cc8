"""``dinov2``: DINOv2 ViT features through transformers' ``Dinov2Model`` / ``Dinov2WithRegistersModel``.

DINOv2's sequence is ``[CLS, register tokens..., patches]``; the encoder returns the patch rows only, one per patch
of the grid, so every image strategy and connector works with it. Features are the hidden states of
``feature_layer`` (the penultimate layer by default, as Prismatic's DINO-SigLIP uses); layers after it are removed,
and so is the final layer norm unless ``final_norm`` applies it to the chosen layer (DINOv2's own output is normed).
Nothing that never reaches the features is kept (no parameter without a gradient, which DDP would reject); the
unused mask token of masked-image pretraining is dropped too.

Position embeddings are always interpolated to the input's patch grid (DINOv2 does it natively), so any input size
is accepted (floored to the patch size): ``spec.dynamic_size`` is true.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import torch
from pydantic import Field, model_validator
from typing_extensions import Self

from mmfw.config.base import StrictModel, VisionEncoderConfig
from mmfw.encoders.base import DType, VisionEncoder, VisionSpec, torch_dtype
from mmfw.registry import component

if TYPE_CHECKING:
    from mmfw.export.hf_llava import HFLlavaPart

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MODEL_TYPES = ("dinov2", "dinov2_with_registers")


class DINOv2Architecture(StrictModel):
    """Random-init architecture (defaults: ViT-L/14 at 518 px, as ``facebook/dinov2-large``)."""

    image_size: int = Field(518, gt=0)
    patch_size: int = Field(14, gt=0)
    hidden_size: int = Field(1024, gt=0)
    num_hidden_layers: int = Field(24, gt=0)
    num_attention_heads: int = Field(16, gt=0)
    mlp_ratio: int = Field(4, gt=0)
    num_register_tokens: int = Field(0, ge=0)
    """Register tokens (``Dinov2WithRegistersModel`` when > 0; the ``-reg`` checkpoints use 4)."""
    layerscale_value: float = Field(1.0, gt=0)
    layer_norm_eps: float = Field(1e-6, gt=0)
    use_swiglu_ffn: bool = False
    """SwiGLU MLPs, as the giant model uses."""

    @model_validator(mode="after")
    def _heads(self) -> DINOv2Architecture:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                             f"{self.num_attention_heads}")
        return self


class DINOv2EncoderConfig(VisionEncoderConfig):
    type: Literal["dinov2"] = "dinov2"
    pretrained: str | None = None
    """Local directory or hub id of a DINOv2 checkpoint (``facebook/dinov2-large``,
    ``facebook/dinov2-with-registers-large``...)."""
    architecture: DINOv2Architecture | None = None
    feature_layer: int = -2
    """Index into the hidden states (0 = embeddings, -1 = last layer)."""
    final_norm: bool = False
    """Apply DINOv2's final layer norm to the features of ``feature_layer``."""
    image_mean: tuple[float, float, float] = IMAGENET_MEAN
    image_std: tuple[float, float, float] = IMAGENET_STD
    dtype: DType = "float32"

    @classmethod
    def example(cls) -> Self:
        return cls(architecture=DINOv2Architecture(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                                   num_attention_heads=2, mlp_ratio=2, num_register_tokens=2))

    @model_validator(mode="after")
    def _source(self) -> DINOv2EncoderConfig:
        if (self.pretrained is None) == (self.architecture is None):
            raise ValueError("set exactly one of 'pretrained' (weights) and 'architecture' (random init)")
        if self.architecture is not None:
            check_feature_layer(self.feature_layer, self.architecture.num_hidden_layers)
        return self


def check_feature_layer(feature_layer: int, layers: int) -> int:
    """The number of layers to keep for ``feature_layer``; ``ValueError`` when it is out of range."""
    if not -layers - 1 <= feature_layer <= layers:
        raise ValueError(f"feature_layer {feature_layer} out of range for {layers} layers "
                         f"(valid: {-layers - 1}..{layers})")
    return feature_layer % (layers + 1)


def _load(cfg: DINOv2EncoderConfig, dtype: torch.dtype) -> torch.nn.Module:
    from transformers import AutoConfig, Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    if cfg.pretrained is not None:
        model_type = AutoConfig.from_pretrained(cfg.pretrained).model_type
        if model_type not in MODEL_TYPES:
            raise ValueError(f"dinov2: pretrained {cfg.pretrained!r} is a {model_type!r} checkpoint, not one of "
                             f"{', '.join(MODEL_TYPES)}")
        model_cls = Dinov2WithRegistersModel if model_type == "dinov2_with_registers" else Dinov2Model
        return model_cls.from_pretrained(cfg.pretrained, dtype=dtype)
    arch = cfg.architecture.model_dump()
    if arch["num_register_tokens"]:
        return Dinov2WithRegistersModel(Dinov2WithRegistersConfig(**arch)).to(dtype)
    del arch["num_register_tokens"]
    return Dinov2Model(Dinov2Config(**arch, use_mask_token=False)).to(dtype)


@component("dinov2", config=DINOv2EncoderConfig)
class DINOv2VisionEncoder(VisionEncoder):
    def __init__(self, cfg: DINOv2EncoderConfig) -> None:
        super().__init__(cfg)
        self.model = _load(cfg, torch_dtype(cfg.dtype))
        mc = self.model.config
        keep = check_feature_layer(cfg.feature_layer, mc.num_hidden_layers)
        self.model.encoder.layer = self.model.encoder.layer[:keep]
        if not cfg.final_norm:
            self.model.layernorm = torch.nn.Identity()
        self.model.embeddings.mask_token = None  # only used for masked-image pretraining
        self.num_prefix_tokens = 1 + getattr(mc, "num_register_tokens", 0)
        """CLS + register tokens in front of the patches."""
        self._spec = VisionSpec(image_size=(mc.image_size, mc.image_size), patch_size=mc.patch_size,
                                mean=cfg.image_mean, std=cfg.image_std, embed_dim=mc.hidden_size, dynamic_size=True)

    @property
    def spec(self) -> VisionSpec:
        return self._spec

    def layer_groups(self) -> list[torch.nn.Module]:
        return list(self.model.encoder.layer)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.model(pixel_values.to(self.dtype))
        return out.last_hidden_state[:, self.num_prefix_tokens:]

    def hf_llava_export(self) -> HFLlavaPart:
        """transformers' Llava vision tower is any vision model: a ``Dinov2Model`` with the kept layers, features from
        the last of them with CLS dropped (``vision_feature_select_strategy="default"``). Register tokens (Llava
        would keep them) and ``final_norm`` (Llava reads the hidden states before the norm) have no counterpart."""
        from mmfw.export.hf_llava import ExportError, HFLlavaPart, prefixed

        if self.num_prefix_tokens != 1:
            raise ExportError("register tokens have no transformers Llava counterpart (it drops only the CLS token)")
        if self.cfg.final_norm:
            raise ExportError("final_norm has no transformers Llava counterpart (it reads un-normed hidden states)")
        layers = len(self.model.encoder.layer)
        if layers == 0:
            raise ExportError("feature_layer 0 (the embeddings) has no transformers Llava counterpart")
        state = {k: v for k, v in self.model.state_dict().items() if not k.startswith("layernorm.")}
        width = self.model.config.hidden_size
        ref = state["embeddings.cls_token"]
        state["layernorm.weight"] = torch.ones(width, dtype=ref.dtype, device=ref.device)
        state["layernorm.bias"] = torch.zeros(width, dtype=ref.dtype, device=ref.device)
        backbone_keys = ("out_features", "out_indices", "stage_names")  # derived from the layer count
        vision_config = {k: v for k, v in self.model.config.to_dict().items() if k not in backbone_keys}
        vision_config |= {"num_hidden_layers": layers, "use_mask_token": False}
        return HFLlavaPart(
            config={"vision_config": vision_config, "vision_feature_layer": -1,
                    "vision_feature_select_strategy": "default"},
            weights=prefixed(state, "model.vision_tower."),
            processor={"patch_size": self.spec.patch_size, "vision_feature_select_strategy": "default",
                       "num_additional_image_tokens": 1})
