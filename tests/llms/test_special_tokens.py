"""Opt-in extra special tokens (OmniLMM's ``<im_start>``, ``<im_patch>``, ``<im_end>``) on every transformers LLM.

They become single tokens, and when they are new to a pretrained model its input and output embeddings grow by one
row each, initialised to the mean of the existing rows (the old rows unchanged).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from mmfw.components import collect_registries, make_plugin_manager
from mmfw.llms.base import HFCausalLM
from mmfw.llms.llama import LlamaLLM, LlamaLLMConfig

SPECIALS = ["<im_start>", "<im_patch>", "<im_end>"]
HF_LLMS = [e.name for e in collect_registries(make_plugin_manager(load_entry_points=False)).llms.entries()
           if issubclass(e.obj, HFCausalLM)]


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("name", HF_LLMS)
def test_new_rows_are_the_mean_of_the_old_rows(registries, name: str, tied: bool, tokenizer_dir: Path,
                                               tmp_path: Path) -> None:
    llm_cls, cfg_cls = registries.llms.get(name), registries.llms.config_class(name)
    base = cfg_cls.example(tokenizer=str(tokenizer_dir))
    arch = base.architecture.model_copy(update={"tie_word_embeddings": tied})
    base = base.model_copy(update={"architecture": arch})
    torch.manual_seed(0)
    pretrained = llm_cls(base, llm_cls.load_tokenizer(base))
    pretrained.model.save_pretrained(tmp_path)
    old_in = pretrained.model.get_input_embeddings().weight.detach().clone()
    old_out = pretrained.model.get_output_embeddings().weight.detach().clone()
    n_old = old_in.shape[0]

    cfg = cfg_cls(pretrained=str(tmp_path), tokenizer=str(tokenizer_dir), extra_special_tokens=SPECIALS)
    tok = llm_cls.load_tokenizer(cfg)
    assert len(tok) == n_old + len(SPECIALS)
    assert sorted(tok.convert_tokens_to_ids(SPECIALS)) == list(range(n_old, n_old + len(SPECIALS)))
    llm = llm_cls(cfg, tok)
    new_in = llm.model.get_input_embeddings().weight.detach()
    new_out = llm.model.get_output_embeddings().weight.detach()
    assert new_in.shape[0] == new_out.shape[0] == len(tok)
    torch.testing.assert_close(new_in[:n_old], old_in)
    torch.testing.assert_close(new_out[:n_old], old_out)
    for row in range(n_old, len(tok)):
        torch.testing.assert_close(new_in[row], old_in.mean(dim=0))
        torch.testing.assert_close(new_out[row], old_out.mean(dim=0))
    assert (new_in.data_ptr() == new_out.data_ptr()) == tied


def test_tokens_already_known_are_not_added_twice(tokenizer_dir: Path) -> None:
    plain = LlamaLLMConfig.example(tokenizer=str(tokenizer_dir))
    cfg = plain.model_copy(update={"extra_special_tokens": ("<image>", "<im_patch>")})  # <image> is already known
    assert len(LlamaLLM.load_tokenizer(cfg)) == len(LlamaLLM.load_tokenizer(plain)) + 1


def test_config_rejects_empty_or_duplicate_tokens(tokenizer_dir: Path) -> None:
    kwargs = {"tokenizer": str(tokenizer_dir), "architecture": {"hidden_size": 32, "num_attention_heads": 2}}
    with pytest.raises(ValidationError, match="duplicate"):
        LlamaLLMConfig(**kwargs, extra_special_tokens=["<a>", "<a>"])
    with pytest.raises(ValidationError, match="non-empty"):
        LlamaLLMConfig(**kwargs, extra_special_tokens=[""])
