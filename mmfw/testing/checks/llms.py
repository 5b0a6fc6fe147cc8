"""LLM contracts: a tokenizer with a prefix-stable chat template and a pad token; a model that takes
``inputs_embeds``, covers the vocabulary, learns, computes only the kept logits when asked, generates from
embeddings, obeys ``dtype``, and turns extra special tokens into single tokens."""

from __future__ import annotations

import torch

from mmfw.llms.base import LanguageModel
from mmfw.testing.core import ComponentUnderTest, contract, listing, missing_grads
from mmfw.training.loss import IGNORE_INDEX, logit_positions, token_loss_sum

KIND = "llms"
CONVERSATION = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "What colour is the square?"},
    {"role": "assistant", "content": "red"},
]


def build(cut: ComponentUnderTest, cfg=None, tokenizer=None) -> LanguageModel:
    torch.manual_seed(0)
    cfg = cfg or cut.config
    tokenizer = tokenizer or cut.tokenizer()
    return cut.run("building it", lambda: cut.registries.llms.build(cfg, tokenizer=tokenizer),
                   "the LLM must build from its example(tokenizer) config with (cfg, tokenizer)")


def batch(tokenizer, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    rows = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    length = max(map(len, rows))
    ids = torch.tensor([r + [tokenizer.pad_token_id] * (length - len(r)) for r in rows])
    mask = torch.tensor([[1] * len(r) + [0] * (length - len(r)) for r in rows])
    return ids, mask


@contract(KIND, "chat-template")
def chat_template(cut: ComponentUnderTest) -> None:
    """The tokenizer has a pad token and a chat template whose prompt is a prefix of the full conversation (label
    masking relies on it), and which keeps every message's content."""
    tok = cut.tokenizer()
    cut.require(tok.pad_token is not None, "the tokenizer has no pad token", "set one in load_tokenizer")
    cut.require(tok.chat_template, "the tokenizer has no chat template",
                "give the family a default_chat_template (used when the tokenizer has none)")
    prompt = cut.run("apply_chat_template(add_generation_prompt=True)", lambda: tok.apply_chat_template(
        CONVERSATION[:2], tokenize=False, add_generation_prompt=True), "the template must render system+user turns")
    full = cut.run("apply_chat_template", lambda: tok.apply_chat_template(CONVERSATION, tokenize=False),
                   "the template must render a system, user, assistant conversation")
    lost = [m["role"] for m in CONVERSATION if m["content"] not in full]
    cut.require(not lost, f"the rendered conversation lost the content of the {lost} message(s)",
                "render every message's content (fold a system message into the first user turn if need be)")
    cut.require(full.startswith(prompt), "the rendered prompt (add_generation_prompt=True) is not a prefix of the "
                f"rendered conversation: {prompt!r} vs {full!r}",
                "the generation prompt must be exactly what precedes the assistant's reply")


@contract(KIND, "forward-backward")
def forward_backward(cut: ComponentUnderTest) -> None:
    """From ``inputs_embeds``: logits over the whole vocabulary, a finite loss, a gradient for every trainable
    parameter; ``hidden_size`` is the embedding width."""
    tok = cut.tokenizer()
    llm = build(cut)
    emb = llm.get_input_embeddings()
    cut.require(emb.weight.shape[0] >= len(tok), f"{emb.weight.shape[0]} embedding rows for {len(tok)} tokens",
                "grow the embeddings to the tokenizer's length")
    cut.require(emb.weight.shape[1] == llm.hidden_size,
                f"hidden_size is {llm.hidden_size} but the embeddings are {emb.weight.shape[1]} wide",
                "hidden_size must be the width of the input embeddings (the connector's out_dim)")
    ids, mask = batch(tok, ["a red square on the left", "two circles"])
    out = cut.run("forward(inputs_embeds, attention_mask, labels)", lambda: llm(
        inputs_embeds=emb(ids), attention_mask=mask, labels=ids.masked_fill(mask == 0, IGNORE_INDEX)),
        "forward must take transformers' causal-LM keywords")
    cut.require(tuple(out.logits.shape[:2]) == tuple(ids.shape) and out.logits.shape[-1] >= len(tok),
                f"logits of shape {tuple(out.logits.shape)} for input ids {tuple(ids.shape)}",
                "return logits (batch, sequence, vocabulary)")
    cut.require(torch.isfinite(out.loss), f"loss {out.loss}", "the loss must be finite")
    out.loss.backward()
    missing = missing_grads(llm.named_parameters())
    cut.require(not missing, f"trainable parameters {listing(missing)} received no gradient",
                "every trainable parameter must take part in forward")


@contract(KIND, "kept-logits")
def kept_logits(cut: ComponentUnderTest) -> None:
    """With ``logits_to_keep`` (a 1-D tensor of positions) only those logits are computed, with the same loss and
    gradients as the full logits (training relies on it)."""
    tok = cut.tokenizer()
    llm = build(cut)
    ids, mask = batch(tok, ["a red square on the left", "two circles", "a blue one"])
    labels = ids.masked_fill(mask == 0, IGNORE_INDEX)
    labels[:, :3] = IGNORE_INDEX
    labels[1, 3:] = IGNORE_INDEX
    positions = logit_positions(labels)
    losses, grads = [], []
    for keep in (None, positions):
        llm.zero_grad()
        kwargs = {} if keep is None else {"logits_to_keep": keep}
        logits = cut.run("forward(logits_to_keep=positions)", lambda kwargs=kwargs: llm(
            inputs_embeds=llm.get_input_embeddings()(ids), attention_mask=mask, **kwargs).logits,
            "pass logits_to_keep through to the transformers model")
        want = ids.shape[1] if keep is None else len(positions)
        cut.require(logits.shape[1] == want, f"{logits.shape[1]} logit positions for {want} kept",
                    "logits_to_keep as a 1-D tensor selects those sequence positions")
        loss = token_loss_sum(logits, labels, keep)
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in llm.named_parameters() if p.grad is not None})
    cut.require(torch.allclose(losses[1], losses[0], rtol=1e-4, atol=1e-5),
                f"loss over kept logits {losses[1]} != full loss {losses[0]}",
                "the kept logits must equal the full logits at those positions")
    differ = [n for n in grads[0] if n not in grads[1] or not torch.allclose(grads[1][n], grads[0][n], rtol=1e-3,
                                                                             atol=1e-5)]
    cut.require(not differ, f"gradients of {listing(differ)} differ with logits_to_keep",
                "the kept logits must equal the full logits at those positions")


@contract(KIND, "generate")
def generate(cut: ComponentUnderTest) -> None:
    """Greedy generation from ``inputs_embeds`` returns only the new tokens."""
    tok = cut.tokenizer()
    llm = build(cut)
    ids, mask = batch(tok, ["a red square"])
    llm.eval()
    new = cut.run("model.generate(inputs_embeds=...)", lambda: llm.model.generate(
        inputs_embeds=llm.get_input_embeddings()(ids), attention_mask=mask, max_new_tokens=3, min_new_tokens=3,
        do_sample=False), "the wrapped model must generate from embeddings")
    cut.require(tuple(new.shape) == (1, 3), f"generate returned shape {tuple(new.shape)} for 3 new tokens",
                "generation from inputs_embeds returns only the new tokens")


@contract(KIND, "dtype")
def dtype(cut: ComponentUnderTest) -> None:
    """A ``dtype: bfloat16`` config gives bfloat16 parameters and a finite loss."""
    cfg = cut.config
    if "dtype" not in type(cfg).model_fields:
        cut.fail("the config has no 'dtype' field", "LLM configs take dtype: float32 | bfloat16 | float16")
    cfg = type(cfg).model_validate({**cfg.model_dump(), "dtype": "bfloat16"})
    tok = cut.tokenizer()
    llm = build(cut, cfg, tok)
    dtypes = {p.dtype for p in llm.parameters() if p.is_floating_point()}
    cut.require(dtypes == {torch.bfloat16}, f"dtype bfloat16 gave parameters of {sorted(map(str, dtypes))}",
                "cast the model to the config's dtype")
    ids, mask = batch(tok, ["two circles"])
    out = llm(inputs_embeds=llm.get_input_embeddings()(ids), attention_mask=mask, labels=ids)
    cut.require(torch.isfinite(out.loss), f"bfloat16 loss {out.loss}", "the loss must be finite in bfloat16")


@contract(KIND, "extra-special-tokens")
def extra_special_tokens(cut: ComponentUnderTest) -> None:
    """``extra_special_tokens`` (when the config has it) become single tokens with embedding rows."""
    cfg = cut.config
    if "extra_special_tokens" not in type(cfg).model_fields:
        cut.not_applicable("the config has no extra_special_tokens field")
    specials = ["<im_start>", "<im_patch>", "<im_end>"]
    cfg = type(cfg).model_validate({**cfg.model_dump(), "extra_special_tokens": specials})
    tok = cut.run("load_tokenizer", lambda: cut.registries.llms.get(cut.name).load_tokenizer(cfg),
                  "load_tokenizer must add extra_special_tokens")
    ids = tok.encode("x<im_start><im_patch><im_patch><im_end>y", add_special_tokens=False)
    special_ids = tok.convert_tokens_to_ids(specials)
    found = [i for i in ids if i in special_ids]
    cut.require(len(set(special_ids)) == 3 and found == [special_ids[0], special_ids[1], special_ids[1],
                                                         special_ids[2]],
                f"the special tokens encode as {found} (ids {special_ids})", "add them with special_tokens=True")
    llm = build(cut, cfg, tok)
    rows = llm.get_input_embeddings().weight.shape[0]
    cut.require(rows >= len(tok) > max(special_ids), f"{rows} embedding rows for {len(tok)} tokens",
                "grow the embeddings to the tokenizer's length")
