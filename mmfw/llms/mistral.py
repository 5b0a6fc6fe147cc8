"""Mistral (OmniLMM's LLM) through transformers' ``MistralForCausalLM``.

The default chat template is Mistral's ``[INST] ... [/INST]`` format (used only when the tokenizer has none). A
system message, which Mistral's own template does not know, is written at the start of the first user turn.
"""

from __future__ import annotations

from typing import Literal

from mmfw.lazy import lazy_attr
from mmfw.llms.base import HFCausalLM, HFCausalLMConfig
from mmfw.registry import component

MISTRAL_CHAT_TEMPLATE = (
    "{{ bos_token }}{% set ns = namespace(system='') %}{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.system = message['content'] + '\n\n' %}"
    "{% elif message['role'] == 'user' %}[INST] {{ ns.system }}{{ message['content'] }} [/INST]"
    "{% set ns.system = '' %}"
    "{% else %}{{ message['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)


class MistralLLMConfig(HFCausalLMConfig):
    type: Literal["mistral"] = "mistral"


@component("mistral", config=MistralLLMConfig)
class MistralLLM(HFCausalLM):
    hf_config_class = lazy_attr("transformers:MistralConfig")
    hf_model_class = lazy_attr("transformers:MistralForCausalLM")
    default_chat_template = MISTRAL_CHAT_TEMPLATE
