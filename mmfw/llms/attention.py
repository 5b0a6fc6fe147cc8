"""``sdpa_varlen``: PyTorch's scaled dot-product attention that computes only each sample's own attention in packed rows.

Packed rows (``training.packing``) hold several samples, their ``position_ids`` restarting at 0 for each. With
``attn_implementation: sdpa`` transformers turns the restarts into a block-diagonal causal mask and attention runs
over the whole row: a row of 512 tokens holding samples of 100 tokens computes a 512 x 512 score matrix of which
about a fifth is used. ``sdpa_varlen`` (registered with transformers' ``AttentionInterface`` and
``AttentionMaskInterface``) instead runs causal attention on each sample's slice of the row, what flash attention's
variable-length kernels do on GPUs, with the same values up to float rounding. Everything that is not a packed row
(padded batches, generation with a KV cache, sliding windows shorter than the row) goes to transformers' own
``sdpa`` path unchanged, so a model trained with it can be exported and run with plain ``sdpa``.
"""

from __future__ import annotations

from typing import Any

import torch

from mmfw.errors import ConfigError

NAME = "sdpa_varlen"
_REGISTERED = False


def packed_segments(position_ids: torch.Tensor | None, batch: int, length: int) -> list[list[int]] | None:
    """Per row, the start of every sample (``position_ids`` restarting at 0), or ``None`` when no row is packed."""
    if position_ids is None or position_ids.dim() != 2 or position_ids.shape[-1] != length:
        return None
    starts = (position_ids == 0).nonzero().tolist()
    if not starts or len(starts) <= position_ids.shape[0]:
        return None
    rows: list[list[int]] = [[] for _ in range(position_ids.shape[0])]
    for r, c in starts:
        rows[r].append(c)
    if any(not s or s[0] != 0 for s in rows):
        return None
    return rows * batch if len(rows) == 1 and batch > 1 else rows


def varlen_attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers attention function: causal attention per packed sample when the rows are packed, else ``sdpa``.

    ``query``/``key``/``value`` are ``[batch, heads, length, head_dim]``; returns ``[batch, length, heads, head_dim]``
    as every transformers attention function does."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    batch, _, length, _ = query.shape
    segments = None
    if attention_mask is None and key.shape[2] == length > 1:
        if "position_ids" not in kwargs:  # packed rows would silently attend across samples
            raise ConfigError([f"model.llm.attn_implementation: {NAME!r} reads the samples of packed rows from the "
                               f"position ids, which {type(module).__name__} does not pass to its attention; use "
                               "'sdpa'"])
        segments = packed_segments(kwargs["position_ids"], batch, length)
    if segments is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    rows = []
    for b, starts in enumerate(segments):
        parts = []
        for start, end in zip(starts, [*starts[1:], length], strict=True):
            out, _ = sdpa_attention_forward(module, query[b:b + 1, :, start:end], key[b:b + 1, :, start:end],
                                            value[b:b + 1, :, start:end], None, **{**kwargs, "is_causal": True})
            parts.append(out)
        rows.append(torch.cat(parts, dim=1))
    return torch.cat(rows, dim=0), None


def varlen_mask(batch_size: int, q_length: int, kv_length: int, q_offset: int = 0, kv_offset: int = 0,
                attention_mask: torch.Tensor | None = None, allow_is_causal_skip: bool = True,
                use_vmap: bool = False, config: Any = None, **kwargs: Any) -> torch.Tensor | None:
    """transformers mask function: no mask for packed rows (the attention function reads the samples from the
    position ids), ``sdpa``'s mask for everything else.

    A packed row reaches a mask function with no padding mask, no cache offset, and the causal skip turned off by
    the packed-sequence detection; a sliding window shorter than the row, or a model's own extra mask functions
    (``use_vmap``), keep ``sdpa``'s mask, which the attention function then uses as it is."""
    from transformers.masking_utils import sdpa_mask

    window = None if config is None else getattr(config, "sliding_window", None)
    if (attention_mask is None and not allow_is_causal_skip and not use_vmap and q_length == kv_length
            and q_offset == 0 and kv_offset == 0 and (window is None or window >= q_length)):
        return None
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                     kv_offset=kv_offset, attention_mask=attention_mask, allow_is_causal_skip=allow_is_causal_skip,
                     use_vmap=use_vmap, config=config, **kwargs)


def register_varlen_attention() -> None:
    """Make ``attn_implementation="sdpa_varlen"`` known to transformers (idempotent)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    AttentionInterface.register(NAME, varlen_attention)
    AttentionMaskInterface.register(NAME, varlen_mask)
    _REGISTERED = True
