"""Mistral, Qwen2 and Qwen3: the transformers class each wraps, their default chat templates, their real sizes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer, MistralForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM

from mmfw.llms.base import CausalLMArchitecture
from mmfw.llms.llama import LlamaLLM, LlamaLLMConfig
from mmfw.llms.mistral import MistralLLM, MistralLLMConfig
from mmfw.llms.qwen2 import Qwen2LLM, Qwen2LLMConfig
from mmfw.llms.qwen3 import Qwen3LLM, Qwen3LLMConfig

FAMILIES = {
    "mistral": (MistralLLM, MistralLLMConfig, MistralForCausalLM),
    "qwen2": (Qwen2LLM, Qwen2LLMConfig, Qwen2ForCausalLM),
    "qwen3": (Qwen3LLM, Qwen3LLMConfig, Qwen3ForCausalLM),
}
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Colour?"},
    {"role": "assistant", "content": "red"},
    {"role": "user", "content": "Shape?"},
]


@pytest.fixture(scope="module")
def templateless_tokenizer(tokenizer_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny tokenizer without a chat template, so each family's default applies."""
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    tok.chat_template = None
    out = tmp_path_factory.mktemp("templateless")
    tok.save_pretrained(out)
    (out / "chat_template.jinja").unlink(missing_ok=True)
    assert not AutoTokenizer.from_pretrained(out).chat_template
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_wraps_the_transformers_class(family: str, tokenizer_dir: Path) -> None:
    llm_cls, cfg_cls, hf_cls = FAMILIES[family]
    cfg = cfg_cls.example(tokenizer=str(tokenizer_dir))
    llm = llm_cls(cfg, llm_cls.load_tokenizer(cfg))
    assert type(llm.model) is hf_cls


def render(llm_cls, cfg_cls, tokenizer: Path, messages, **kwargs) -> str:
    tok = llm_cls.load_tokenizer(cfg_cls.example(tokenizer=str(tokenizer)))
    return tok.apply_chat_template(messages, tokenize=False, **kwargs)


def test_mistral_default_template(templateless_tokenizer: Path) -> None:
    text = render(MistralLLM, MistralLLMConfig, templateless_tokenizer, CONVERSATION, add_generation_prompt=True)
    assert text == "<|bos|>[INST] Be brief.\n\nColour? [/INST]red<|im_end|>[INST] Shape? [/INST]"


def test_qwen2_default_template_adds_the_default_system_prompt(templateless_tokenizer: Path) -> None:
    text = render(Qwen2LLM, Qwen2LLMConfig, templateless_tokenizer, CONVERSATION[1:], add_generation_prompt=True)
    assert text == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nColour?<|im_end|>\n"
                    "<|im_start|>assistant\nred<|im_end|>\n<|im_start|>user\nShape?<|im_end|>\n"
                    "<|im_start|>assistant\n")
    with_system = render(Qwen2LLM, Qwen2LLMConfig, templateless_tokenizer, CONVERSATION)
    assert with_system.startswith("<|im_start|>system\nBe brief.<|im_end|>\n") and "helpful" not in with_system


def test_qwen3_default_template_is_plain_chatml(templateless_tokenizer: Path) -> None:
    text = render(Qwen3LLM, Qwen3LLMConfig, templateless_tokenizer, CONVERSATION[1:3])
    assert text == "<|im_start|>user\nColour?<|im_end|>\n<|im_start|>assistant\nred<|im_end|>\n"


def test_the_tokenizers_own_template_wins(tokenizer_dir: Path) -> None:
    own = AutoTokenizer.from_pretrained(tokenizer_dir).chat_template
    assert render(MistralLLM, MistralLLMConfig, tokenizer_dir, CONVERSATION) == \
        AutoTokenizer.from_pretrained(tokenizer_dir).apply_chat_template(CONVERSATION, tokenize=False)
    assert MistralLLM.load_tokenizer(MistralLLMConfig.example(tokenizer=str(tokenizer_dir))).chat_template == own


REAL = {  # name: (component, config class, architecture, parameters in billions)
    "Llama-2-7B": (LlamaLLM, LlamaLLMConfig, dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                                                  num_attention_heads=32, vocab_size=32000), 6.74),
    "Mistral-7B": (MistralLLM, MistralLLMConfig, dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                                                      num_attention_heads=32, num_key_value_heads=8,
                                                      vocab_size=32000), 7.24),
    "Qwen2-7B": (Qwen2LLM, Qwen2LLMConfig, dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                                                num_attention_heads=28, num_key_value_heads=4, vocab_size=152064),
                 7.62),
    "Qwen3-8B": (Qwen3LLM, Qwen3LLMConfig, dict(hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                                                num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                                                vocab_size=151936), 8.19),
}


@pytest.mark.parametrize("name", REAL)
def test_real_scale_parameter_counts_on_meta(name: str, tokenizer_dir: Path) -> None:
    llm_cls, cfg_cls, arch, billions = REAL[name]
    cfg = cfg_cls(tokenizer=str(tokenizer_dir), architecture=CausalLMArchitecture(**arch), dtype="bfloat16")
    with torch.device("meta"):
        llm = llm_cls(cfg, llm_cls.load_tokenizer(cfg))
    assert sum(p.numel() for p in llm.parameters()) / 1e9 == pytest.approx(billions, abs=0.01)
