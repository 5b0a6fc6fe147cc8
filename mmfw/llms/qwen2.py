"""Qwen2 / Qwen2.5 through transformers' ``Qwen2ForCausalLM``; ChatML chat template by default.

The default template is Qwen2's: ChatML turns (``<|im_start|>role\\n...<|im_end|>\\n``) with Qwen's default system
prompt when the conversation has none. It applies only when the tokenizer has no template of its own.
"""

from __future__ import annotations

from typing import Literal

from mmfw.lazy import lazy_attr
from mmfw.llms.base import HFCausalLM, HFCausalLMConfig
from mmfw.registry import component

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""Plain ChatML, no default system prompt."""

QWEN2_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""ChatML with Qwen2's default system prompt."""


class Qwen2LLMConfig(HFCausalLMConfig):
    type: Literal["qwen2"] = "qwen2"


@component("qwen2", config=Qwen2LLMConfig)
class Qwen2LLM(HFCausalLM):
    hf_config_class = lazy_attr("transformers:Qwen2Config")
    hf_model_class = lazy_attr("transformers:Qwen2ForCausalLM")
    default_chat_template = QWEN2_CHAT_TEMPLATE
