"""Next-token loss summed over supervised tokens, so that micro-batches, processes and packed rows combine exactly.

Each micro-batch contributes ``sum of token losses / supervised tokens of the whole optimizer step`` (all
micro-batches of the gradient-accumulation window, all processes), which makes the gradient of one step independent
of how its samples are split into micro-batches, processes or packed rows (the mean-of-means of per-batch losses is
not).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE_INDEX = -100


def shifted_targets(labels: torch.Tensor) -> torch.Tensor:
    """Targets of the logits at positions ``0..S-2``: ``labels[:, 1:]``."""
    return labels[:, 1:]


def supervised_tokens(labels: torch.Tensor) -> int:
    """Tokens that carry a target (what the loss is averaged over)."""
    return int((shifted_targets(labels) != IGNORE_INDEX).sum())


def token_loss_sum(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Sum of the next-token cross-entropies (float32) over every supervised position of the batch."""
    targets = shifted_targets(labels)
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")
