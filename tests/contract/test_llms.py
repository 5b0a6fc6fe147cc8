"""LLM contract, for every registered LLM built from its ``example(tokenizer)`` config.

The tokenizer comes with a chat template (prefix-stable when a reply is appended, which label masking relies on) and
a pad token; the model takes ``inputs_embeds``, covers the whole vocabulary, learns (gradients reach every trainable
parameter), generates from embeddings, obeys ``dtype``, and extra special tokens become single tokens.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from contract_utils import example_config, missing_grads

from mmfw.components import Registries
from mmfw.training.loss import IGNORE_INDEX, logit_positions, token_loss_sum

CONVERSATION = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What colour is the square?"},
    {"role": "assistant", "content": "red"},
]


@pytest.fixture
def llm_parts(registries: Registries, llm_name: str, tokenizer_dir: Path):
    torch.manual_seed(0)
    cfg = example_config(registries, "llms", llm_name, tokenizer_dir)
    cls = registries.llms.get(llm_name)
    tokenizer = cls.load_tokenizer(cfg)
    return cfg, tokenizer, registries.llms.build(cfg, tokenizer=tokenizer)


def batch(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    length = max(map(len, rows))
    ids = torch.tensor([r + [tokenizer.pad_token_id] * (length - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in rows])
    return ids, mask


def test_tokenizer_has_a_prefix_stable_chat_template(llm_parts) -> None:
    _, tok, _ = llm_parts
    assert tok.pad_token is not None and tok.chat_template
    prompt = tok.apply_chat_template(CONVERSATION[:2], tokenize=False, add_generation_prompt=True)
    full = tok.apply_chat_template(CONVERSATION, tokenize=False)
    assert all(m["content"] in full for m in CONVERSATION)
    assert full.startswith(prompt), "the rendered prompt is a prefix of the rendered conversation"


def test_forward_backward_from_embeddings(llm_parts) -> None:
    cfg, tok, llm = llm_parts
    assert llm.hidden_size == cfg.architecture.hidden_size
    assert llm.get_input_embeddings().weight.shape[0] >= len(tok)
    ids, mask = batch(tok, ["a red square on the left", "two circles"])
    embeds = llm.get_input_embeddings()(ids)
    out = llm(inputs_embeds=embeds, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))
    assert out.logits.shape[:2] == ids.shape and out.logits.shape[-1] >= len(tok)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert missing_grads(llm.named_parameters()) == []


def test_loss_over_kept_logits_equals_the_full_loss(llm_parts) -> None:
    """Training computes only the logits of supervised positions (``logits_to_keep``): same loss, same gradients."""
    _, tok, llm = llm_parts
    ids, mask = batch(tok, ["a red square on the left", "two circles", "a blue one"])
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    labels[:, :3] = IGNORE_INDEX  # an unsupervised prompt
    labels[1, 3:] = IGNORE_INDEX  # a row without targets
    positions = logit_positions(labels)
    assert 0 < len(positions) < ids.shape[1] - 1
    losses, grads = [], []
    for keep in (None, positions):
        llm.zero_grad()
        kwargs = {} if keep is None else {"logits_to_keep": keep}
        logits = llm(inputs_embeds=llm.get_input_embeddings()(ids), attention_mask=mask, **kwargs).logits
        assert logits.shape[1] == (ids.shape[1] if keep is None else len(positions))
        loss = token_loss_sum(logits, labels, keep)
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in llm.named_parameters() if p.grad is not None})
    torch.testing.assert_close(losses[1], losses[0])
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)


def test_generates_from_embeddings(llm_parts) -> None:
    _, tok, llm = llm_parts
    ids, mask = batch(tok, ["a red square"])
    llm.eval()
    new = llm.model.generate(inputs_embeds=llm.get_input_embeddings()(ids), attention_mask=mask, max_new_tokens=3,
                             min_new_tokens=3, do_sample=False)
    assert new.shape == (1, 3)


def test_bfloat16(registries: Registries, llm_name: str, tokenizer_dir: Path) -> None:
    cfg = example_config(registries, "llms", llm_name, tokenizer_dir)
    cfg = type(cfg).model_validate({**cfg.model_dump(), "dtype": "bfloat16"})
    cls = registries.llms.get(llm_name)
    tok = cls.load_tokenizer(cfg)
    llm = registries.llms.build(cfg, tokenizer=tok)
    assert {p.dtype for p in llm.parameters() if p.is_floating_point()} == {torch.bfloat16}
    ids, mask = batch(tok, ["two circles"])
    out = llm(inputs_embeds=llm.get_input_embeddings()(ids), attention_mask=mask, labels=ids)
    assert torch.isfinite(out.loss)


def test_extra_special_tokens_are_single_tokens(registries: Registries, llm_name: str, tokenizer_dir: Path) -> None:
    cfg = example_config(registries, "llms", llm_name, tokenizer_dir)
    if "extra_special_tokens" not in type(cfg).model_fields:
        pytest.skip("no extra_special_tokens option")
    specials = ["<im_start>", "<im_patch>", "<im_end>"]
    cfg = type(cfg).model_validate({**cfg.model_dump(), "extra_special_tokens": specials})
    tok = registries.llms.get(llm_name).load_tokenizer(cfg)
    ids = tok.encode("x<im_start><im_patch><im_patch><im_end>y", add_special_tokens=False)
    special_ids = tok.convert_tokens_to_ids(specials)
    assert len(set(special_ids)) == 3
    assert [i for i in ids if i in special_ids] == [special_ids[0], special_ids[1], special_ids[1], special_ids[2]]
    assert tok.decode(ids) == "x<im_start><im_patch><im_patch><im_end>y"
    llm = registries.llms.build(cfg, tokenizer=tok)
    assert llm.get_input_embeddings().weight.shape[0] >= len(tok) > max(special_ids)
