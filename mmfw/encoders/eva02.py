"""EVA02 vision encoder through timm (OmniLMM's vision tower).

``timm.create_model(model_name, num_classes=0, dynamic_img_size=True, dynamic_img_pad=True)`` as OmniLMM does, then
the parts that never reach the features are removed: the pooling head (attention pool, ``fc_norm``, classifier) and
every block after ``feature_layer``. With the default ``feature_layer=-2`` this is OmniLMM's
``blocks[-1] = Identity()``: features come from the penultimate block, followed by the tower's final norm
(``forward_features`` applies it; ``final_norm: false`` drops it). Prefix tokens (CLS, registers) are dropped, so the
output has one row per patch.

Inputs of any size are accepted: position embeddings (and RoPE) are interpolated to the patch grid, and a size that
is not a multiple of the patch size is padded up to one (``VisionSpec.pad_to_patch``).
"""

from __future__ import annotations

import contextlib
import difflib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator
from typing_extensions import Self

from mmfw.config.base import StrictModel, VisionEncoderConfig
from mmfw.encoders.base import DType, VisionEncoder, VisionSpec, torch_dtype
from mmfw.registry import component

_SCHEMAS = ("local-dir:", "hf-hub:")


class EVA02Architecture(StrictModel):
    """Overrides of the timm variant's architecture (unset fields keep the variant's values).

    With pretrained weights only ``img_size`` makes sense (timm resamples the position embeddings on load).
    """

    img_size: int | None = Field(None, gt=0)
    patch_size: int | None = Field(None, gt=0)
    embed_dim: int | None = Field(None, gt=0)
    depth: int | None = Field(None, gt=0)
    num_heads: int | None = Field(None, gt=0)
    mlp_ratio: float | None = Field(None, gt=0)


class EVA02EncoderConfig(VisionEncoderConfig):
    type: Literal["eva02"] = "eva02"
    model_name: str = "eva02_enormous_patch14_clip_224"
    """A timm EVA02 model name, optionally with a weights tag (``eva02_enormous_patch14_clip_224.laion2b_plus``), or
    ``local-dir:/path`` / ``hf-hub:org/repo``: a timm model folder (``config.json`` + weights)."""
    pretrained: bool | str = False
    """``false``: random init. ``true``: timm's pretrained weights for ``model_name`` (from the Hugging Face hub or
    its local cache, or the ``local-dir:`` folder). A string: a local checkpoint file (timm or original EVA-CLIP
    layout; timm converts it)."""
    architecture: EVA02Architecture | None = None
    feature_layer: int = -2
    """Block whose output is the feature: ``-1`` = last block, ``-2`` = penultimate (OmniLMM), ``k >= 1`` = the k-th
    block. Later blocks are removed."""
    final_norm: bool = True
    """Apply the tower's final norm to the features (as ``forward_features`` does)."""
    image_mean: tuple[float, float, float] | None = None
    """Normalisation mean; default from timm's pretrained config of ``model_name`` (OpenAI CLIP's for EVA02-CLIP)."""
    image_std: tuple[float, float, float] | None = None
    dtype: DType = "float32"

    @field_validator("model_name")
    @classmethod
    def _known(cls, v: str) -> str:
        if v.startswith(_SCHEMAS):
            return v
        import timm

        if not timm.is_model(v):
            names = timm.list_models("eva02*")
            close = difflib.get_close_matches(v.split(".")[0], names, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ValueError(f"timm has no model {v!r}; {hint}EVA02 models: {', '.join(names)}")
        return v

    @model_validator(mode="after")
    def _layer(self) -> EVA02EncoderConfig:
        if self.feature_layer == 0:
            raise ValueError("feature_layer must select a block (1..depth or -depth..-1), not 0")
        depth = self.architecture.depth if self.architecture else None
        if depth is not None and not -depth <= self.feature_layer <= depth:
            raise ValueError(f"feature_layer {self.feature_layer} out of range for {depth} blocks")
        return self

    @property
    def loads_weights(self) -> bool:
        """``pretrained: true``, a checkpoint file, or a ``local-dir:`` / ``hf-hub:`` model folder. A timm model name
        with ``pretrained: false`` is a random init, which validation builds on the meta device like any other."""
        return self.pretrained is not False or self.model_name.startswith(_SCHEMAS)

    def sources(self) -> dict[str, str]:
        return {"pretrained": self.pretrained} if isinstance(self.pretrained, str) else {}

    @classmethod
    def example(cls) -> Self:
        return cls(architecture=EVA02Architecture(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                                                  mlp_ratio=2.0))


@contextlib.contextmanager
def _no_init_on_meta(eva_cls: type, skip: bool) -> Iterator[None]:
    """Skip ``eva_cls.init_weights`` while a random-init model is built on the meta device.

    timm initialises every weight in ``Eva.__init__`` even on the meta device (its own TODO: "skip init when on meta
    device"), where there are no values to set; its ``trunc_normal_`` runs through PyTorch's slow Python meta
    decompositions there (about 1 s for EVA02-E, e.g. ``mmfw inspect`` of omnilmm-12b). Shapes, dtypes and
    parameters are unchanged; on a real device nothing is skipped.
    """
    if not skip or torch.get_default_device().type != "meta" or "init_weights" not in vars(eva_cls):
        yield
        return
    original = vars(eva_cls)["init_weights"]
    eva_cls.init_weights = lambda self, needs_reset=True: None
    try:
        yield
    finally:
        eva_cls.init_weights = original


@component("eva02", config=EVA02EncoderConfig)
class EVA02VisionEncoder(VisionEncoder):
    def __init__(self, cfg: EVA02EncoderConfig) -> None:
        super().__init__(cfg)
        import timm
        from timm.models.eva import Eva

        overrides = cfg.architecture.model_dump(exclude_none=True) if cfg.architecture else {}
        pretrained, overlay = bool(cfg.pretrained), None
        if isinstance(cfg.pretrained, str):
            if not Path(cfg.pretrained).is_file():
                raise FileNotFoundError(f"eva02: pretrained checkpoint file not found: {cfg.pretrained}")
            overlay = {"file": str(cfg.pretrained)}
        with _no_init_on_meta(Eva, skip=not pretrained):
            model = timm.create_model(cfg.model_name, pretrained=pretrained, pretrained_cfg_overlay=overlay,
                                      num_classes=0, dynamic_img_size=True, dynamic_img_pad=True, **overrides)
        if not isinstance(model, Eva):
            raise ValueError(f"eva02: timm model {cfg.model_name!r} is a {type(model).__name__}, not an EVA model")
        depth = len(model.blocks)
        if not -depth <= cfg.feature_layer <= depth or cfg.feature_layer == 0:
            raise ValueError(f"eva02: feature_layer {cfg.feature_layer} out of range for {depth} blocks")
        keep = cfg.feature_layer % (depth + 1)
        model.prune_intermediate_layers(indices=[keep - 1], prune_norm=not cfg.final_norm, prune_head=True)
        self.model = model.to(torch_dtype(cfg.dtype))

        patch = model.patch_embed.patch_size
        if patch[0] != patch[1]:
            raise ValueError(f"eva02: non-square patches {patch} are not supported")
        pcfg = model.pretrained_cfg or {}
        self._spec = VisionSpec(
            image_size=tuple(model.patch_embed.img_size), patch_size=patch[0],
            mean=tuple(cfg.image_mean or pcfg.get("mean", (0.48145466, 0.4578275, 0.40821073))),
            std=tuple(cfg.image_std or pcfg.get("std", (0.26862954, 0.26130258, 0.27577711))),
            embed_dim=model.embed_dim, dynamic_size=True, pad_to_patch=True)

    @property
    def spec(self) -> VisionSpec:
        return self._spec

    def init_non_persistent_buffers(self) -> None:
        """timm's EVA keeps its rotary tables and fixed key biases out of the state dict; its modules recompute them."""
        for module in self.model.modules():
            init = getattr(module, "init_non_persistent_buffers", None)  # timm's own per-module method
            if init is not None:
                init()

    def layer_groups(self) -> list[torch.nn.Module]:
        return list(self.model.blocks)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.model.forward_features(pixel_values.to(self.dtype))
        return x[:, self.model.num_prefix_tokens:]
