"""The common fusion layer: splice image feature rows into the token embeddings at the image placeholders.

Vectorised over the whole batch: every placeholder position (in row-major order over the batch) receives the next
feature row, so several images per sample keep their order and text-only samples pass through untouched, whatever
the padding side. Image positions never carry a label.

The number of placeholders must equal the number of feature rows, for the batch and, when the caller knows how many
rows each sample's images produced (``rows_per_sample``), for every sample: a batch-level match can hide two samples
that disagree in opposite directions, which would silently give one sample's features to another (transformers
#36002). A mismatch raises :class:`FusionError` naming the samples and both counts.

With image start/end markers (``<im_start>`` + N x placeholder + ``<im_end>``), :func:`check_image_markers` checks
what OmniLMM checks, and says where it fails: every sample has as many start as end tokens, and each image's end
token comes right after that image's feature rows.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from mmfw.errors import IGNORE_INDEX, FusionError

__all__ = ["IGNORE_INDEX", "FusionError", "check_image_markers", "splice_image_features"]


def _check_shapes(inputs_embeds: torch.Tensor, input_ids: torch.Tensor, labels: torch.Tensor | None) -> None:
    if inputs_embeds.dim() != 3 or input_ids.shape != inputs_embeds.shape[:2]:
        raise FusionError(f"input_ids {tuple(input_ids.shape)} and inputs_embeds {tuple(inputs_embeds.shape)} do not "
                          "match (expected (B, S) and (B, S, D))")
    if labels is not None and labels.shape != input_ids.shape:
        raise FusionError(f"labels {tuple(labels.shape)} and input_ids {tuple(input_ids.shape)} differ in shape")


def check_image_markers(input_ids: torch.Tensor, image_token_id: int, start_id: int, end_id: int,
                        rows_per_image: Sequence[int]) -> None:
    """Check the start/end markers of every image of the batch against the feature rows of each image.

    Images are matched to start tokens in batch order (row-major, as the features are concatenated). Raises
    :class:`FusionError` naming the sample and the image (its index within the sample) on the first problem: unequal
    start and end counts, more or fewer start tokens than images, or an end token that is missing or misplaced.
    """
    ids = input_ids.detach().cpu()
    starts, ends = (ids == start_id).sum(dim=1).tolist(), (ids == end_id).sum(dim=1).tolist()
    bad = [(b, s, e) for b, (s, e) in enumerate(zip(starts, ends, strict=True)) if s != e]
    if bad:
        detail = "; ".join(f"sample {b}: {s} start, {e} end" for b, s, e in bad)
        raise FusionError(f"image start and end tokens do not pair up ({detail})", bad[0][0])
    rows = [int(r) for r in rows_per_image]
    if sum(starts) != len(rows):
        raise FusionError(f"{sum(starts)} image start tokens in the batch (per sample: {starts}) but {len(rows)} "
                          "images")
    seq = ids.shape[1]
    k_in_sample: dict[int, int] = {}
    for g, (b, p) in enumerate((ids == start_id).nonzero().tolist()):
        k = k_in_sample.get(b, 0)
        k_in_sample[b] = k + 1
        where = f"sample {b}, image {k} (start token at position {p})"
        stop = p + 1 + rows[g]
        run = ids[b, p + 1:min(stop, seq)]
        off = (run != image_token_id).nonzero()
        if len(off):
            q = p + 1 + int(off[0])
            if int(ids[b, q]) == end_id:
                raise FusionError(f"{where}: the image end token at position {q} comes after {q - p - 1} "
                                  f"placeholder(s), but the image has {rows[g]} feature rows", b)
            raise FusionError(f"{where}: position {q} holds token {int(ids[b, q])} where the image's {rows[g]} "
                              f"feature rows go (expected the placeholder {image_token_id})", b)
        if stop >= seq or int(ids[b, stop]) != end_id:
            found = "the end of the sequence" if stop >= seq else f"token {int(ids[b, stop])}"
            raise FusionError(f"{where}: the image end token must come right after its {rows[g]} feature rows, at "
                              f"position {stop}; found {found}", b)


def splice_image_features(
    inputs_embeds: torch.Tensor,
    input_ids: torch.Tensor,
    image_token_id: int,
    image_features: torch.Tensor,
    labels: torch.Tensor | None = None,
    *,
    rows_per_sample: Sequence[int] | torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return ``inputs_embeds`` with placeholder rows replaced by ``image_features`` (and labels masked there).

    Args:
        inputs_embeds: ``(B, S, D)`` token embeddings.
        input_ids: ``(B, S)`` ids; positions equal to ``image_token_id`` are placeholders.
        image_token_id: id of the placeholder token.
        image_features: ``(N, D)`` feature rows of every image of the batch, concatenated in batch order.
        labels: optional ``(B, S)`` labels; placeholder positions become ``-100``.
        rows_per_sample: optional ``(B,)`` feature rows of each sample's images; checked against the placeholders
            of each sample.

    Raises:
        FusionError: placeholders and feature rows disagree (batch or sample), or the shapes do not fit together.
    """
    _check_shapes(inputs_embeds, input_ids, labels)
    if image_features.dim() != 2:
        raise FusionError(f"image_features must be (rows, D), got shape {tuple(image_features.shape)}")
    mask = input_ids == image_token_id
    n_slots = int(mask.sum())
    if n_slots != image_features.shape[0]:
        per_sample = mask.sum(dim=1).tolist()
        raise FusionError(
            f"{n_slots} image placeholder tokens in the batch (per sample: {per_sample}) but {image_features.shape[0]}"
            " image feature rows; the data pipeline and the model disagree on image token counts")
    if rows_per_sample is not None:
        expected = torch.as_tensor(rows_per_sample, dtype=torch.long).reshape(-1).tolist()
        found = mask.sum(dim=1).tolist()
        if len(expected) != len(found):
            raise FusionError(f"rows_per_sample has {len(expected)} entries for a batch of {len(found)} samples")
        bad = [(b, f, e) for b, (f, e) in enumerate(zip(found, expected, strict=True)) if f != e]
        if bad:
            detail = "; ".join(f"sample {b}: {f} placeholder tokens, {e} feature rows" for b, f, e in bad)
            raise FusionError(f"image placeholders and feature rows disagree per sample ({detail}); the data pipeline "
                              "and the model disagree on image token counts", sample=bad[0][0])
    if image_features.shape[-1] != inputs_embeds.shape[-1]:
        raise FusionError(f"image features have width {image_features.shape[-1]}, token embeddings "
                          f"{inputs_embeds.shape[-1]}")
    if labels is not None:
        labels = labels.masked_fill(mask, IGNORE_INDEX)
    if n_slots == 0:
        return inputs_embeds, labels
    b, s, d = inputs_embeds.shape
    index = mask.reshape(-1).nonzero().squeeze(1)
    flat = inputs_embeds.reshape(b * s, d).index_copy(0, index, image_features.to(inputs_embeds.dtype))
    return flat.view(b, s, d), labels
