"""The one batch type of mmfw: what both collators produce and what training, evaluation and inference consume.

:class:`VLMBatch` holds the tensors of a padded or packed micro-batch and what the data pipeline knows about its
samples (record ids, skipped and truncated samples). :meth:`VLMBatch.model_inputs` is the single place that says
which of them the model takes, so every caller passes ``image_counts`` and the fusion checks each sample's
placeholders against that sample's own images (:func:`~mmfw.model.fusion.splice_image_features`), not only the
totals of the batch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch

from mmfw.data.report import SkippedSample, TruncatedSample

__all__ = ["VLMBatch"]

_TENSORS = ("input_ids", "attention_mask", "labels", "pixel_values", "image_sizes", "num_tiles", "image_counts",
            "position_ids")
_IMAGE_INPUTS = ("pixel_values", "image_sizes", "num_tiles", "image_counts")
_MODEL_INPUTS = ("input_ids", "attention_mask", "pixel_values", "image_sizes", "num_tiles", "image_counts",
                 "position_ids")


@dataclass
class VLMBatch:
    """A collated micro-batch (``B`` rows of ``S`` tokens).

    ``pixel_values`` holds the tiles of every image, sample order then image order (None without images);
    ``num_tiles`` the tiles of each image, ``image_sizes`` each image's original ``(width, height)`` and
    ``image_counts`` the images of each row. A packed batch (:class:`~mmfw.data.packing.PackedCollator`) has
    ``position_ids`` restarting per sample, no ``attention_mask`` and ``sample_lengths`` (the samples of each row).
    ``skipped`` are the samples that could not be loaded, dropped from the batch (so ``B`` may be 0); ``ids`` the
    record ids of the samples kept, in row order.
    """

    input_ids: torch.Tensor
    labels: torch.Tensor
    attention_mask: torch.Tensor | None = None
    pixel_values: torch.Tensor | None = None
    image_sizes: torch.Tensor = field(default_factory=lambda: torch.zeros(0, 2, dtype=torch.long))
    num_tiles: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    image_counts: torch.Tensor | None = None
    position_ids: torch.Tensor | None = None
    sample_lengths: list[list[int]] | None = None
    ids: list[str] = field(default_factory=list)
    skipped: list[SkippedSample] = field(default_factory=list)
    truncated: list[TruncatedSample] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def num_samples(self) -> int:
        """Samples kept in the batch (a packed row holds several)."""
        return sum(len(r) for r in self.sample_lengths) if self.sample_lengths is not None else self.rows

    def real_tokens(self) -> int:
        """Non-padding tokens."""
        if self.sample_lengths is not None:
            return sum(sum(r) for r in self.sample_lengths)
        return int(self.attention_mask.sum()) if self.attention_mask is not None else int(self.input_ids.numel())

    def model_inputs(self, labels: bool = False) -> dict[str, Any]:
        """Keyword arguments of :meth:`VisionLanguageModel.forward` / ``generate`` (``labels`` only if asked for):
        every tensor the model takes, ``image_counts`` included; None-valued ones, and the image tensors of a batch
        without images, are left out."""
        names = (*_MODEL_INPUTS, "labels") if labels else _MODEL_INPUTS
        if self.pixel_values is None:
            names = tuple(k for k in names if k not in _IMAGE_INPUTS)
        return {k: v for k in names if (v := getattr(self, k)) is not None}

    def record_ids(self) -> list[str]:
        """The record id of each row when every row is one sample, else ``[]`` (for messages naming records)."""
        return list(self.ids) if len(self.ids) == self.rows else []

    def to(self, device: torch.device | str, non_blocking: bool = False) -> VLMBatch:
        """The batch with its tensors on ``device`` (Accelerate's data loaders call this)."""
        moved = {k: v.to(device, non_blocking=non_blocking) for k in _TENSORS if (v := getattr(self, k)) is not None}
        return replace(self, **moved)
