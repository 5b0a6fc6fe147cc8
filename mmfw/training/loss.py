"""Next-token loss summed over supervised tokens, so that micro-batches, processes and packed rows combine exactly.

Each micro-batch contributes ``sum of token losses / supervised tokens of the whole optimizer step`` (all
micro-batches of the gradient-accumulation window, all processes), which makes the gradient of one step independent
of how its samples are split into micro-batches, processes or packed rows (the mean-of-means of per-batch losses is
not).

Only the logits that have a target are computed: :func:`logit_positions` lists the sequence positions whose next
token is supervised in at least one row of the batch, the LLM projects only those hidden states onto the vocabulary
(transformers' ``logits_to_keep``), and :func:`token_loss_sum` scores them. In a VLM batch most positions are image
or prompt tokens, so this skips most of the output projection and the softmax over the vocabulary; the loss and its
gradient are the same as over all positions.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from mmfw.errors import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "logit_positions", "shifted_targets", "supervised_tokens", "token_loss_sum"]


def shifted_targets(labels: torch.Tensor) -> torch.Tensor:
    """Targets of the logits at positions ``0..S-2``: ``labels[:, 1:]``."""
    return labels[:, 1:]


def supervised_tokens(labels: torch.Tensor) -> int:
    """Tokens that carry a target (what the loss is averaged over)."""
    return int((shifted_targets(labels) != IGNORE_INDEX).sum())


def logit_positions(labels: torch.Tensor) -> torch.Tensor:
    """Sequence positions (ascending, 1-D) whose logits predict a supervised token in at least one row."""
    return (shifted_targets(labels) != IGNORE_INDEX).any(0).nonzero().squeeze(1)


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
    """Sum of the next-token cross-entropies (float32) over every supervised position of the batch.

    ``logits`` are ``(B, S, V)`` for every position, or ``(B, len(positions), V)`` for the ``positions`` of
    :func:`logit_positions` only (the rest of the sequence carries no target).
    """
    targets = shifted_targets(labels)
    if positions is None:
        logits = logits[:, :-1]
    else:
        targets = targets[:, positions]
    return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")
