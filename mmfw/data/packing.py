"""Padding-free packing: several samples in one row, position ids restarting per sample, no attention across them.

:class:`PackedCollator` turns the ``(index, row)``-tagged items of a
:class:`~mmfw.training.sampling.PackedBatchSampler` batch into the rows of a :class:`~mmfw.data.batch.VLMBatch`. It returns no ``attention_mask``: with
``position_ids`` that restart at 0 for each sample (and for the padding at the end of a row), the LLM's default
``sdpa_varlen`` attention (:mod:`mmfw.llms.attention`) runs each sample's own causal attention, transformers (v5)
derives the per-sample block-diagonal causal mask itself (``find_packed_sequence_indices``) for ``sdpa``/``eager``,
and flash attention uses its varlen kernels. The first label of every sample is ignored, so the last token of a sample never
learns to predict the first token of the next one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from mmfw.data.batch import VLMBatch
from mmfw.data.collator import VLMCollator
from mmfw.data.report import SkippedSample
from mmfw.data.tokenize import IGNORE_INDEX


def position_ids_for(lengths: Sequence[int], row_length: int) -> torch.Tensor:
    """``[0..l0-1, 0..l1-1, ..., 0..pad-1]`` for samples of ``lengths`` padded to ``row_length``."""
    parts = [torch.arange(n) for n in lengths]
    pad = row_length - sum(lengths)
    if pad > 0:
        parts.append(torch.arange(pad))
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


class PackedCollator:
    """Collate packed rows (see module docstring): a :class:`~mmfw.data.batch.VLMBatch` as
    :class:`~mmfw.data.collator.VLMCollator`'s, plus ``position_ids`` and ``sample_lengths`` (per row), with no
    ``attention_mask``; ``image_counts`` counts the images of each row."""

    def __init__(self, pad_token_id: int) -> None:
        self.base = VLMCollator(pad_token_id, padding_side="right")

    def __call__(self, items: Sequence[dict[str, Any] | SkippedSample]) -> VLMBatch:
        rows: dict[int, list[dict[str, Any]]] = {}
        skipped: list[Any] = []
        for item in items:
            if isinstance(item, SkippedSample):
                skipped.append(item)
            else:
                rows.setdefault(int(item.get("row", 0)), []).append(item)
        packed, lengths = [], []
        for r in sorted(rows):
            samples = rows[r]
            labels = []
            for s in samples:
                lab = torch.as_tensor(s["labels"], dtype=torch.long).clone()
                lab[:1] = IGNORE_INDEX
                labels.append(lab)
            packed.append({
                "input_ids": torch.cat([torch.as_tensor(s["input_ids"], dtype=torch.long) for s in samples]),
                "labels": torch.cat(labels),
                "images": [img for s in samples for img in (s.get("images") or [])],
                "truncated": None,
            })
            lengths.append([len(s["input_ids"]) for s in samples])
        batch = self.base([*packed, *skipped])
        width = batch.input_ids.shape[1]
        order = [s for r in sorted(rows) for s in rows[r]]
        return replace(
            batch,
            position_ids=(torch.stack([position_ids_for(n, width) for n in lengths]) if lengths
                          else torch.zeros(0, width, dtype=torch.long)),
            attention_mask=None,
            sample_lengths=lengths,
            ids=[s["id"] for s in order if "id" in s],
            truncated=[s["truncated"] for s in order if s.get("truncated") is not None],
            image_counts=torch.tensor([sum(len(s.get("images") or []) for s in rows[r]) for r in sorted(rows)],
                                      dtype=torch.long),
        )
