"""Gemma, Gemma 2 and Gemma 3 (text) through transformers' ``GemmaForCausalLM``, ``Gemma2ForCausalLM`` and
``Gemma3ForCausalLM``, as :class:`~mmfw.llms.base.HFCausalLM` families (``pretrained`` or ``architecture``).

Gemma has no system role: the default chat template (used when the tokenizer has none of its own, as for a tokenizer
trained from scratch) folds a system message into the first user turn, names the assistant ``model`` and writes
``<start_of_turn>role\\n...<end_of_turn>\\n`` turns after the BOS token, as Google's Gemma tokenizers do.

Gemma multiplies its input embeddings by ``sqrt(hidden_size)`` inside the model, so image features spliced into
``inputs_embeds`` are scaled the same way (the connector learns the scale; transformers' Llava export does the same).
Gemma 2 and 3 use sliding-window attention on some layers and (Gemma 2) soft-capped logits; for from-scratch
architectures set ``architecture.extra`` (``sliding_window``, ``query_pre_attn_scalar``...) to size them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from typing_extensions import Self

from mmfw.lazy import lazy_attr
from mmfw.llms.base import CausalLMArchitecture, HFCausalLM, HFCausalLMConfig
from mmfw.registry import component

if TYPE_CHECKING:
    from transformers import PretrainedConfig

GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% set system = messages[0]['content'] + '\n\n' if messages and messages[0]['role'] == 'system' else '' %}"
    "{% for message in messages if message['role'] != 'system' %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' }}{% if loop.first %}{{ system }}{% endif %}"
    "{{ message['content'] + '<end_of_turn>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
"""Gemma turns; a leading system message becomes the start of the first user turn."""


class GemmaLLMConfig(HFCausalLMConfig):
    type: Literal["gemma"] = "gemma"


@component("gemma", config=GemmaLLMConfig)
class GemmaLLM(HFCausalLM):
    hf_config_class = lazy_attr("transformers:GemmaConfig")
    hf_model_class = lazy_attr("transformers:GemmaForCausalLM")
    default_chat_template = GEMMA_CHAT_TEMPLATE


def _tiny_sliding(cls: type[HFCausalLMConfig], tokenizer: str, layers: int) -> HFCausalLMConfig:
    """A tiny config whose attention scale matches its head size and whose sliding window (8 tokens) is shorter
    than the test sequences, so local attention is exercised."""
    arch = CausalLMArchitecture(hidden_size=48, intermediate_size=96, num_hidden_layers=layers, num_attention_heads=4,
                                num_key_value_heads=2, head_dim=12, max_position_embeddings=256,
                                extra={"query_pre_attn_scalar": 12, "sliding_window": 8})
    return cls(tokenizer=tokenizer, architecture=arch)


class Gemma2LLMConfig(HFCausalLMConfig):
    type: Literal["gemma2"] = "gemma2"
    attn_implementation: Literal["eager", "flash_attention_2"] = "eager"
    """transformers has no SDPA path for Gemma 2's soft-capped attention."""

    @classmethod
    def example(cls, tokenizer: str) -> Self:
        """Two layers: transformers' Gemma 2 alternates sliding-window and global attention."""
        return _tiny_sliding(cls, tokenizer, layers=2)


@component("gemma2", config=Gemma2LLMConfig)
class Gemma2LLM(HFCausalLM):
    hf_config_class = lazy_attr("transformers:Gemma2Config")
    hf_model_class = lazy_attr("transformers:Gemma2ForCausalLM")
    default_chat_template = GEMMA_CHAT_TEMPLATE


class Gemma3LLMConfig(HFCausalLMConfig):
    type: Literal["gemma3"] = "gemma3"

    @classmethod
    def example(cls, tokenizer: str) -> Self:
        """Two layers, the second global (``layer_types``), so both attention kinds and both RoPE bases run."""
        cfg = _tiny_sliding(cls, tokenizer, layers=2)
        extra = cfg.architecture.extra | {"layer_types": ["sliding_attention", "full_attention"]}
        return cfg.model_copy(update={"architecture": cfg.architecture.model_copy(update={"extra": extra})})


@component("gemma3", config=Gemma3LLMConfig)
class Gemma3LLM(HFCausalLM):
    """Gemma 3's text model (the ``gemma-3-1b`` checkpoints, or the language half of a multimodal one saved as
    ``Gemma3ForCausalLM``)."""

    hf_config_class = lazy_attr("transformers:Gemma3TextConfig")
    hf_model_class = lazy_attr("transformers:Gemma3ForCausalLM")
    default_chat_template = GEMMA_CHAT_TEMPLATE

    @classmethod
    def architecture_config(cls, arch: CausalLMArchitecture, vocab_size: int) -> PretrainedConfig:
        """``rope_theta`` sets the base of the global layers (Gemma 3 keeps one RoPE per attention kind; the local
        layers keep transformers' default)."""
        hf = super().architecture_config(arch.model_copy(update={"rope_theta": None}), vocab_size)
        if arch.rope_theta is not None:
            hf.rope_parameters["full_attention"] = {"rope_type": "default", "rope_theta": arch.rope_theta}
        return hf
