"""Train only the embedding rows of the tokens mmfw added (``training.policy.new_token_embeddings``).

OmniLMM keeps a copy of the original embedding rows and writes them back after every step, so only the rows of its
added tokens (``<im_start>``, ``<im_end>``, ...) learn while the LLM is otherwise frozen or adapted. Here the LLM's
input and output embedding weights are made trainable with a gradient hook that zeroes the gradient of every other
row, before the optimizer (and gradient clipping, and gradient accumulation) ever sees it: AdamW's moments of those
rows stay exactly zero, so their update is exactly zero and the rows stay bit-identical, as long as the weights get
no weight decay (decoupled decay would shrink every row). :func:`train_new_token_rows` returns the weights so that
the optimizer puts them in a group without decay; the new rows then train without weight decay.

The rows are those of :attr:`VisionLanguageModel.added_token_ids`: the fusion's tokens (image placeholder, start and
end markers) and ``llm.extra_special_tokens``. Works with single-process and DDP training (the hook runs before
DDP's gradient reduction); FSDP and DeepSpeed flatten parameters and are not supported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
from torch import nn

from mmfw.config import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["NewTokenRows", "embedding_weights", "new_token_row_count", "train_new_token_rows"]


class _KeepRows:
    """Gradient hook: zero every row whose id is not in ``rows`` (the mask follows the gradient's device)."""

    def __init__(self, num_rows: int, rows: list[int]) -> None:
        self.mask = torch.zeros(num_rows, 1, dtype=torch.bool)
        self.mask[rows] = True
        self._on: dict[torch.device, torch.Tensor] = {}

    def __call__(self, grad: torch.Tensor) -> torch.Tensor:
        mask = self._on.get(grad.device)
        if mask is None:
            mask = self._on[grad.device] = self.mask.to(grad.device)
        return grad.masked_fill(~mask, 0)


@dataclass
class NewTokenRows:
    """What :func:`train_new_token_rows` made trainable."""

    weights: list[nn.Parameter]
    rows: list[int]
    hooks: list[torch.utils.hooks.RemovableHandle] = field(default_factory=list)

    @property
    def trainable_numel(self) -> int:
        """Parameters that really train: the new rows of each weight."""
        return sum(len(self.rows) * w.shape[1] for w in self.weights)

    def exempt_from_decay(self, p: nn.Parameter) -> bool:
        return any(p is w for w in self.weights)


def embedding_weights(model: nn.Module) -> list[nn.Parameter]:
    """The LLM's input embedding weight and, unless tied to it, its output embedding weight."""
    weights = [model.llm.get_input_embeddings().weight]
    out = model.llm.get_output_embeddings()
    if out is not None and out.weight is not weights[0]:
        weights.append(out.weight)
    return weights


def new_token_row_count(model: nn.Module) -> int:
    """Parameters :func:`train_new_token_rows` trains in ``model`` (which may live on the meta device)."""
    return sum(len(model.added_token_ids) * w.shape[1] for w in embedding_weights(model))


def train_new_token_rows(model: nn.Module, where: str = "training.policy") -> NewTokenRows:
    """Make the rows of ``model.added_token_ids`` in the LLM's embeddings trainable, and only those (in place)."""
    rows = sorted(set(model.added_token_ids))
    if not rows or rows[0] < 0:
        raise ConfigError([f"{where}.new_token_embeddings: the model was built without a tokenizer, so the ids of "
                           "its added tokens are unknown"])
    weights = embedding_weights(model)
    if any(w.requires_grad for w in weights):
        raise ConfigError([f"{where}.new_token_embeddings: the LLM's embeddings are already trained in full by "
                           "another policy; train either every row or the new ones"])
    out = NewTokenRows(weights, rows)
    for w in weights:
        if rows[-1] >= w.shape[0]:
            raise ConfigError([f"{where}.new_token_embeddings: token id {rows[-1]} has no row in an embedding of "
                               f"{w.shape[0]} rows"])
        w.requires_grad_(True)
        out.hooks.append(w.register_hook(_KeepRows(w.shape[0], rows)))
    logger.info("training %d new token rows of %d embedding weight(s) (%d parameters)", len(rows), len(weights),
                out.trainable_numel)
    return out
