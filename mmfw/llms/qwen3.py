"""Qwen3 (dense) through transformers' ``Qwen3ForCausalLM``; plain ChatML chat template by default.

Qwen3 adds a per-head RMSNorm on queries and keys and sets ``head_dim`` independently of the hidden size. Its
released tokenizers carry their own (thinking-aware) template, which is used as is; the plain ChatML default only
applies to a tokenizer without one.
"""

from __future__ import annotations

from typing import Literal

from mmfw.lazy import lazy_attr
from mmfw.llms.base import HFCausalLM, HFCausalLMConfig
from mmfw.llms.qwen2 import CHATML_TEMPLATE
from mmfw.registry import component


class Qwen3LLMConfig(HFCausalLMConfig):
    type: Literal["qwen3"] = "qwen3"


@component("qwen3", config=Qwen3LLMConfig)
class Qwen3LLM(HFCausalLM):
    hf_config_class = lazy_attr("transformers:Qwen3Config")
    hf_model_class = lazy_attr("transformers:Qwen3ForCausalLM")
    default_chat_template = CHATML_TEMPLATE
