"""``export_config()``: an LLM loaded from pretrained weights describes itself by architecture, so an ``hf`` export
rebuilds it without the checkpoint it came from (same modules, same transformers config)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoTokenizer

from mmfw.llms.llama import LlamaLLM, LlamaLLMConfig
from mmfw.llms.qwen2 import Qwen2LLM, Qwen2LLMConfig

ARCH = {"hidden_size": 48, "intermediate_size": 96, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 128, "rope_theta": 5000.0,
        "extra": {"rms_norm_eps": 1e-5, "initializer_range": 0.05}}


@pytest.mark.parametrize("family", [(LlamaLLM, LlamaLLMConfig), (Qwen2LLM, Qwen2LLMConfig)], ids=["llama", "qwen2"])
def test_pretrained_llm_exports_its_architecture(family, tokenizer_dir, tmp_path) -> None:
    llm_cls, cfg_cls = family
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    source = llm_cls(cfg_cls(tokenizer=str(tokenizer_dir), architecture=ARCH), tok)
    source.model.save_pretrained(tmp_path / "pretrained")
    loaded = llm_cls(cfg_cls(pretrained=str(tmp_path / "pretrained"), tokenizer=str(tokenizer_dir)), tok)

    exported = loaded.export_config()
    assert exported.pretrained is None and exported.tokenizer == str(tokenizer_dir)
    assert exported.architecture.vocab_size == len(tok)
    rebuilt = llm_cls(cfg_cls.model_validate(exported.model_dump(mode="json")), tokenizer=None)
    shapes = {k: tuple(v.shape) for k, v in rebuilt.model.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in loaded.model.state_dict().items()}
    ignore = {"_name_or_path", "architectures", "dtype", "transformers_version", "pad_token_id", "eos_token_id",
              "bos_token_id"}
    ours = {k: v for k, v in rebuilt.model.config.to_dict().items() if k not in ignore}
    theirs = {k: v for k, v in loaded.model.config.to_dict().items() if k not in ignore}
    assert ours == theirs


def test_architecture_llm_exports_its_vocabulary_size(tokenizer_dir) -> None:
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    llm = LlamaLLM(LlamaLLMConfig(tokenizer=str(tokenizer_dir), architecture=ARCH), tok)
    exported = llm.export_config()
    assert exported.architecture.vocab_size == len(tok) and exported.architecture.hidden_size == 48
    assert llm.cfg.architecture.vocab_size is None  # the component's own config is not changed

