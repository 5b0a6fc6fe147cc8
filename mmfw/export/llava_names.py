"""mmfw parameter names -> transformers ``LlavaForConditionalGeneration`` / ``LlavaNextForConditionalGeneration``
names, for the composition transformers' Llava has: a ``clip`` encoder, a two-layer ``mlp`` connector, a
transformers causal LM (``llama``, ``qwen2``, ...) and, for LlavaNext, ``anyres``'s ``image_newline``.

:func:`build_hf_llava` asks each component for its weights; this table is the name-by-name view of the same mapping,
for comparing one tensor at a time (gradients in the benchmarks, state dicts in the parity tests).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmfw.errors import ExportError

if TYPE_CHECKING:
    import torch

__all__ = ["LLAVA_PREFIXES", "hf_llava_name", "hf_llava_state_dict"]

LLAVA_PREFIXES: tuple[tuple[str, str], ...] = (  # mmfw state-dict prefix -> transformers Llava / LlavaNext prefix
    ("vision_encoder.model.", "model.vision_tower."),
    ("connector.net.0.", "model.multi_modal_projector.linear_1."),
    ("connector.net.2.", "model.multi_modal_projector.linear_2."),
    ("llm.model.model.", "model.language_model."),
    ("llm.model.lm_head.", "lm_head."),
    ("image_strategy.image_newline", "model.image_newline"),
)


def hf_llava_name(key: str) -> str:
    """The transformers Llava name of mmfw parameter ``key``; :class:`ExportError` when it has none."""
    for src, dst in LLAVA_PREFIXES:
        if key.startswith(src):
            return dst + key[len(src):]
    raise ExportError(f"no transformers Llava name for mmfw parameter {key!r}")


def hf_llava_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` under transformers Llava names (tensors shared, not copied)."""
    return {hf_llava_name(key): value for key, value in model.state_dict().items()}
