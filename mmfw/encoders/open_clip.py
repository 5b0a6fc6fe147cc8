"""OpenCLIP ViT vision encoder through ``open_clip`` (only the vision trunk).

``model_name`` is an OpenCLIP model name (``ViT-L-14-336``), or ``hf-hub:org/repo`` / ``local-dir:/path`` whose
``open_clip_config.json`` describes it. Weights are loaded when ``pretrained`` (a pretrained tag such as ``openai``,
or a local checkpoint file) is set or the name has a schema, through ``open_clip.create_model`` (which knows every
checkpoint layout); the text tower is then discarded. Otherwise only the vision tower is built, at random, from the
model's ``vision_cfg`` with the ``architecture`` overrides.

Features are the output of block ``feature_layer`` (penultimate by default), CLS token dropped. Blocks after it, the
final norm, the projection and any attention pooler are removed; patch dropout is disabled (it would change the
token count). Only OpenCLIP's own ``VisionTransformer`` towers are supported (timm-based towers: use ``eva02``).
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, model_validator
from typing_extensions import Self

from mmfw.config.base import StrictModel, VisionEncoderConfig
from mmfw.encoders.base import DType, VisionEncoder, VisionSpec, torch_dtype
from mmfw.registry import component

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_SCHEMAS = ("hf-hub:", "local-dir:")


class OpenCLIPArchitecture(StrictModel):
    """Overrides of the model's ``vision_cfg`` for random init (unset fields keep the model's values)."""

    image_size: int | None = Field(None, gt=0)
    patch_size: int | None = Field(None, gt=0)
    width: int | None = Field(None, gt=0)
    layers: int | None = Field(None, gt=0)
    head_width: int | None = Field(None, gt=0)
    mlp_ratio: float | None = Field(None, gt=0)


class OpenCLIPEncoderConfig(VisionEncoderConfig):
    type: Literal["open-clip"] = "open-clip"
    model_name: str = "ViT-L-14-336"
    """OpenCLIP model name, or ``hf-hub:org/repo`` / ``local-dir:/path`` (weights and config from there)."""
    pretrained: str | None = None
    """Pretrained tag of ``model_name`` (e.g. ``openai``) or a local checkpoint file; unset: random init."""
    architecture: OpenCLIPArchitecture | None = None
    """Random init only: overrides of the model's vision config."""
    feature_layer: int = -2
    """Block whose output is the feature: ``-1`` = last, ``-2`` = penultimate, ``k >= 1`` = the k-th block."""
    image_mean: tuple[float, float, float] | None = None
    """Normalisation mean; default from OpenCLIP's preprocessing config (OpenAI CLIP's when it has none)."""
    image_std: tuple[float, float, float] | None = None
    dtype: DType = "float32"

    @property
    def loads_weights(self) -> bool:
        return self.pretrained is not None or self.model_name.startswith(_SCHEMAS)

    def sources(self) -> dict[str, str]:
        return {} if self.pretrained is None else {"pretrained": self.pretrained}

    @model_validator(mode="after")
    def _check(self) -> OpenCLIPEncoderConfig:
        if self.model_name.startswith(_SCHEMAS):
            if self.pretrained is not None:
                raise ValueError(f"'pretrained' must be unset: {self.model_name!r} names its own weights")
        else:
            import open_clip

            model_cfg = open_clip.get_model_config(self.model_name)
            if model_cfg is None:
                raise ValueError(f"open_clip has no model {self.model_name!r}; see open_clip.list_models()")
            vision_cfg = model_cfg["vision_cfg"]
            if vision_cfg.get("timm_model_name") or not isinstance(vision_cfg.get("layers", 12), int):
                tower = vision_cfg.get("timm_model_name") or "a ResNet"
                raise ValueError(f"{self.model_name!r}'s vision tower is {tower}, not OpenCLIP's VisionTransformer; "
                                 "only the latter is supported (use 'eva02' for timm EVA towers)")
        if self.architecture is not None and self.loads_weights:
            raise ValueError("'architecture' overrides apply to random init only; unset 'pretrained'")
        if self.feature_layer == 0:
            raise ValueError("feature_layer must select a block (1..layers or -layers..-1), not 0")
        return self

    @classmethod
    def example(cls) -> Self:
        return cls(model_name="ViT-B-16", architecture=OpenCLIPArchitecture(
            image_size=32, patch_size=8, width=32, layers=2, head_width=16, mlp_ratio=2.0))


@component("open-clip", config=OpenCLIPEncoderConfig)
class OpenCLIPVisionEncoder(VisionEncoder):
    def __init__(self, cfg: OpenCLIPEncoderConfig) -> None:
        super().__init__(cfg)
        import open_clip
        from open_clip.model import _build_vision_tower
        from open_clip.transformer import VisionTransformer

        if cfg.loads_weights:
            precision = {"float32": "fp32", "bfloat16": "pure_bf16", "float16": "pure_fp16"}[cfg.dtype]
            clip = open_clip.create_model(cfg.model_name, pretrained=cfg.pretrained, precision=precision)
            preprocess = open_clip.get_model_preprocess_cfg(clip)
            visual = clip.visual
            del clip
        else:
            model_cfg = open_clip.get_model_config(cfg.model_name)
            overrides = cfg.architecture.model_dump(exclude_none=True) if cfg.architecture else {}
            visual = _build_vision_tower(model_cfg["embed_dim"], {**model_cfg["vision_cfg"], **overrides},
                                         quick_gelu=model_cfg.get("quick_gelu", False))
            preprocess = {}
        if not isinstance(visual, VisionTransformer):
            raise ValueError(f"open-clip: {cfg.model_name!r} has a {type(visual).__name__} vision tower; only "
                             "OpenCLIP's VisionTransformer is supported (use 'eva02' for timm towers)")
        depth = len(visual.transformer.resblocks)
        if not -depth <= cfg.feature_layer <= depth:
            raise ValueError(f"open-clip: feature_layer {cfg.feature_layer} out of range for {depth} blocks")
        keep = cfg.feature_layer % (depth + 1)
        visual.prune_intermediate_layers(indices=[keep - 1], prune_norm=True, prune_head=True)
        visual.attn_pool = None
        if hasattr(visual, "attn_pool_contrastive"):
            visual.attn_pool_contrastive = None
        visual.patch_dropout = torch.nn.Identity()
        self.visual = visual.to(torch_dtype(cfg.dtype))

        if visual.patch_size[0] != visual.patch_size[1]:
            raise ValueError(f"open-clip: non-square patches {visual.patch_size} are not supported")
        self._spec = VisionSpec(
            image_size=tuple(visual.image_size), patch_size=visual.patch_size[0],
            mean=tuple(cfg.image_mean or preprocess.get("mean", OPENAI_CLIP_MEAN)),
            std=tuple(cfg.image_std or preprocess.get("std", OPENAI_CLIP_STD)),
            embed_dim=visual.transformer.width)

    @property
    def spec(self) -> VisionSpec:
        return self._spec

    def layer_groups(self) -> list[torch.nn.Module]:
        return list(self.visual.transformer.resblocks)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.visual.forward_intermediates(pixel_values.to(self.dtype), indices=1, intermediates_only=True,
                                                output_fmt="NLC")
        return out["image_intermediates"][0]
