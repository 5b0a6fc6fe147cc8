"""What a component gives an exporter: its share of a transformers Llava / LlavaNext checkpoint.

Components implement ``hf_llava_export(self) -> HFLlavaPart`` with these types (and raise
:class:`mmfw.errors.ExportError` for settings without a counterpart); :mod:`mmfw.export.hf_llava` assembles the
parts. Kept below the component packages so that components never import the exporter.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

__all__ = ["FORMATS", "HFLlavaPart", "image_processor_kwargs", "prefixed"]

FORMATS = ("hf-llava", "hf-llava-next")


@dataclass
class HFLlavaPart:
    """One component's share of a transformers Llava / LlavaNext checkpoint."""

    config: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of ``LlavaConfig`` / ``LlavaNextConfig`` (e.g. ``vision_config``, ``projector_hidden_act``)."""
    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    """Tensors under their full transformers names (``model.vision_tower.…``, ``lm_head.weight``...)."""
    processor: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of ``LlavaProcessor`` / ``LlavaNextProcessor`` (e.g. ``patch_size``)."""
    image_processor: Any = None
    """Image strategies: the transformers image processor that prepares pixels as the strategy does."""
    formats: tuple[str, ...] = FORMATS
    """Export formats this part can belong to (image strategies narrow it to one)."""


def prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """``state`` with ``prefix`` put in front of every key."""
    return {prefix + k: v for k, v in state.items()}


def image_processor_kwargs(mean: tuple[float, ...], std: tuple[float, ...], interpolation: str) -> dict[str, Any]:
    """Normalisation and resampling arguments of a transformers image processor, from a strategy's settings."""
    from PIL import Image

    resample = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
                "nearest": Image.Resampling.NEAREST}[interpolation]
    return {"image_mean": list(mean), "image_std": list(std), "resample": int(resample), "do_convert_rgb": True}

