"""Llama (and Vicuna, LLaVA's LLM) through transformers' ``LlamaForCausalLM``."""

from __future__ import annotations

from typing import Literal

from mmfw.lazy import lazy_attr
from mmfw.llms.base import HFCausalLM, HFCausalLMConfig
from mmfw.registry import component

LLAMA2_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{% if message['role'] == 'system' %}<<SYS>>\n{{ message['content'] }}\n<</SYS>>\n\n"
    "{% elif message['role'] == 'user' %}[INST] {{ message['content'] }} [/INST]"
    "{% else %} {{ message['content'] }}{{ eos_token }}{% endif %}{% endfor %}"
)


class LlamaLLMConfig(HFCausalLMConfig):
    type: Literal["llama"] = "llama"


@component("llama", config=LlamaLLMConfig)
class LlamaLLM(HFCausalLM):
    hf_config_class = lazy_attr("transformers:LlamaConfig")
    hf_model_class = lazy_attr("transformers:LlamaForCausalLM")
    default_chat_template = LLAMA2_CHAT_TEMPLATE
