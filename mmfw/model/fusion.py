"""The common fusion layer: splice image feature rows into the token embeddings at the image placeholders.

Vectorised over the whole batch: every placeholder position (in row-major order over the batch) receives the next
feature row, so several images per sample keep their order and text-only samples pass through untouched. Image
positions never carry a label.
"""

from __future__ import annotations

import torch

IGNORE_INDEX = -100


class FusionError(ValueError):
    """Image placeholders and image features disagree."""


def splice_image_features(
    inputs_embeds: torch.Tensor,
    input_ids: torch.Tensor,
    image_token_id: int,
    image_features: torch.Tensor,
    labels: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Return ``inputs_embeds`` with placeholder rows replaced by ``image_features`` (and labels masked there).

    Args:
        inputs_embeds: ``(B, S, D)`` token embeddings.
        input_ids: ``(B, S)`` ids; positions equal to ``image_token_id`` are placeholders.
        image_token_id: id of the placeholder token.
        image_features: ``(N, D)`` feature rows of every image of the batch, concatenated in batch order.
        labels: optional ``(B, S)`` labels; placeholder positions become ``-100``.
    """
    mask = input_ids == image_token_id
    n_slots = int(mask.sum())
    if n_slots != image_features.shape[0]:
        per_sample = mask.sum(dim=1).tolist()
        raise FusionError(
            f"{n_slots} image placeholder tokens in the batch (per sample: {per_sample}) but {image_features.shape[0]}"
            " image feature rows; the data pipeline and the model disagree on image token counts")
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
