"""Batch LLaVA dataset items: pad the token sequences, concatenate every image's tiles.

:class:`VLMCollator` turns a list of ``{"input_ids", "labels", "images": list[ImageInput]}`` items (as produced by
:class:`~mmfw.data.dataset.LlavaDataset`) into a :class:`~mmfw.data.batch.VLMBatch` of::

    input_ids       (B, S)  long, padded with pad_token_id
    attention_mask  (B, S)  long, 1 on real tokens, 0 on padding
    labels          (B, S)  long, -100 on padding
    pixel_values    (total_tiles, 3, H, W) float, the tiles of every image in sample order then image order,
                    or None when the batch has no image
    image_sizes     (num_images, 2) long, each image's original (width, height)
    num_tiles       (num_images,) long, tiles of each image (to split pixel_values / features per image)
    image_counts    (B,) long, images of each sample
    ids             the record ids of the samples kept (items without an ``id`` have none)
    skipped         list of :class:`~mmfw.data.report.SkippedSample`: the samples the dataset could not load,
                    dropped from the batch (every other key covers only the samples kept, so B may be 0)
    truncated       list of :class:`~mmfw.data.report.TruncatedSample` of the samples kept

Right padding is for training; left padding for batched generation (the last prompt token of every row is then at
position ``S - 1``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

import torch

from mmfw.data.batch import VLMBatch
from mmfw.data.report import SkippedSample
from mmfw.data.tokenize import IGNORE_INDEX

logger = logging.getLogger(__name__)

__all__ = ["VLMCollator"]


class VLMCollator:
    """Pads ``input_ids``/``labels`` and concatenates image tiles (see module docstring)."""

    def __init__(self, pad_token_id: int, padding_side: Literal["right", "left"] = "right") -> None:
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        if pad_token_id is None:
            raise ValueError("pad_token_id is None; give the tokenizer a pad token (or reuse eos/unk)")
        self.pad_token_id = int(pad_token_id)
        self.padding_side = padding_side

    def _pad(self, rows: Sequence[torch.Tensor], value: int, length: int) -> torch.Tensor:
        out = torch.full((len(rows), length), value, dtype=torch.long)
        for b, row in enumerate(rows):
            n = row.shape[0]
            if n == 0:
                continue
            if self.padding_side == "right":
                out[b, :n] = row
            else:
                out[b, length - n:] = row
        return out

    def __call__(self, samples: Sequence[dict[str, Any] | SkippedSample]) -> VLMBatch:
        if not samples:
            raise ValueError("cannot collate an empty batch")
        skipped = [s for s in samples if isinstance(s, SkippedSample)]
        samples = [s for s in samples if not isinstance(s, SkippedSample)]
        ids = [torch.as_tensor(s["input_ids"], dtype=torch.long).reshape(-1) for s in samples]
        labels = [torch.as_tensor(s["labels"], dtype=torch.long).reshape(-1) for s in samples]
        for b, (i, lab) in enumerate(zip(ids, labels, strict=True)):
            if i.shape != lab.shape:
                raise ValueError(f"sample {b}: input_ids {tuple(i.shape)} and labels {tuple(lab.shape)} differ")
        length = max((x.shape[0] for x in ids), default=0)
        input_ids = self._pad(ids, self.pad_token_id, length)
        attention_mask = self._pad([torch.ones_like(x) for x in ids], 0, length)
        label_t = self._pad(labels, IGNORE_INDEX, length)

        tiles: list[torch.Tensor] = []
        sizes: list[tuple[int, int]] = []
        num_tiles: list[int] = []
        counts: list[int] = []
        for s in samples:
            images = s.get("images") or []
            counts.append(len(images))
            for img in images:
                pv = img.pixel_values
                if pv.dim() != 4:
                    raise ValueError(f"pixel_values must be (tiles, 3, H, W), got shape {tuple(pv.shape)}")
                tiles.append(pv)
                sizes.append((int(img.size[0]), int(img.size[1])))
                num_tiles.append(pv.shape[0])
        pixel_values = None
        if tiles:
            shapes = {tuple(t.shape[1:]) for t in tiles}
            if len(shapes) > 1:
                raise ValueError(f"all image tiles of a batch must share one shape; got {sorted(shapes)}")
            pixel_values = torch.cat(tiles, dim=0)
        return VLMBatch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            labels=label_t,
            pixel_values=pixel_values,
            image_sizes=torch.tensor(sizes, dtype=torch.long).reshape(-1, 2),
            num_tiles=torch.tensor(num_tiles, dtype=torch.long),
            image_counts=torch.tensor(counts, dtype=torch.long),
            ids=[s["id"] for s in samples if "id" in s],
            skipped=skipped,
            truncated=[s["truncated"] for s in samples if s.get("truncated") is not None],
        )
