"""The composed VLM: mixed image/text-only batches, gradients everywhere, KV-cache generation, fusion errors."""

from __future__ import annotations

from unittest import mock

import pytest
import torch

from mmfw.config import load_config_dict
from mmfw.model.builder import build_model
from mmfw.model.fusion import FusionError


@pytest.fixture
def model_and_tokenizer(tiny_experiment, registries):
    torch.manual_seed(0)
    cfg = load_config_dict(tiny_experiment, registries)
    return build_model(cfg.model, registries)


def batch_with_and_without_image(model, tokenizer):
    n = model.image_strategy.num_tokens((40, 30))
    img = model.image_token_id
    ids_a = tokenizer.encode("what is it?", add_special_tokens=False)
    row_a = ids_a[:2] + [img] * n + ids_a[2:]
    row_b = tokenizer.encode("no image here at all", add_special_tokens=False)
    length = max(len(row_a), len(row_b))
    pad = tokenizer.pad_token_id
    ids = torch.tensor([row_a + [pad] * (length - len(row_a)), row_b + [pad] * (length - len(row_b))])
    mask = torch.tensor([[1] * len(row_a) + [0] * (length - len(row_a)), [1] * len(row_b) + [0] * (length - len(row_b))])
    labels = ids.masked_fill(mask == 0, -100)
    pixels = torch.randn(1, 3, 32, 32)
    return dict(input_ids=ids, attention_mask=mask, labels=labels, pixel_values=pixels,
                image_sizes=torch.tensor([[40, 30]]), num_tiles=torch.tensor([1])), n


def test_mixed_batch_trains_every_parameter(model_and_tokenizer) -> None:
    model, tok = model_and_tokenizer
    batch, n = batch_with_and_without_image(model, tok)
    out = model(**batch)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    missing = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert missing == []


def test_text_only_batch_still_reaches_vision_parameters(model_and_tokenizer) -> None:
    model, tok = model_and_tokenizer
    ids = torch.tensor([tok.encode("only text", add_special_tokens=False)])
    out = model(input_ids=ids, labels=ids)
    out.loss.backward()
    grads = [p.grad for p in model.connector.parameters()]
    assert all(g is not None for g in grads) and all(float(g.abs().sum()) == 0.0 for g in grads)


def test_image_positions_are_never_supervised(model_and_tokenizer) -> None:
    model, tok = model_and_tokenizer
    batch, n = batch_with_and_without_image(model, tok)
    embeds, labels = model.embed(batch["input_ids"], batch["labels"], batch["pixel_values"], batch["image_sizes"],
                                 batch["num_tiles"])
    image_pos = batch["input_ids"] == model.image_token_id
    assert int(image_pos.sum()) == n
    assert (labels[image_pos] == -100).all()
    feats = model.encode_images(batch["pixel_values"], batch["image_sizes"], batch["num_tiles"])
    torch.testing.assert_close(embeds[image_pos], feats)
    text_embeds = model.llm.get_input_embeddings()(batch["input_ids"])
    torch.testing.assert_close(embeds[~image_pos], text_embeds[~image_pos])


def test_placeholder_feature_mismatch_is_a_clear_error(model_and_tokenizer) -> None:
    model, tok = model_and_tokenizer
    batch, n = batch_with_and_without_image(model, tok)
    batch["input_ids"][0, 2] = tok.pad_token_id  # one placeholder fewer than the image's feature rows
    with pytest.raises(FusionError, match=rf"{n - 1} image placeholder tokens .* but {n} image feature rows"):
        model(**batch)


def test_generate_runs_vision_once_and_returns_new_tokens(model_and_tokenizer) -> None:
    model, tok = model_and_tokenizer
    model.eval()
    batch, _ = batch_with_and_without_image(model, tok)
    ids, pixels = batch["input_ids"][:1], batch["pixel_values"]
    with mock.patch.object(model.vision_encoder, "forward", wraps=model.vision_encoder.forward) as spy:
        new = model.generate(ids, pixel_values=pixels, image_sizes=batch["image_sizes"], num_tiles=batch["num_tiles"],
                             max_new_tokens=6, min_new_tokens=6, do_sample=False)
    assert spy.call_count == 1
    assert new.shape == (1, 6)
    # greedy decoding with the cache equals step-by-step argmax without it
    embeds, _ = model.embed(ids, None, pixels, batch["image_sizes"], batch["num_tiles"])
    seq = embeds
    expected = []
    with torch.no_grad():
        for _ in range(6):
            logits = model.llm(inputs_embeds=seq, use_cache=False).logits[:, -1]
            nxt = logits.argmax(-1)
            expected.append(int(nxt))
            seq = torch.cat([seq, model.llm.get_input_embeddings()(nxt)[:, None]], dim=1)
    assert new[0].tolist() == expected


def test_per_sample_mismatch_is_caught_even_when_batch_totals_agree(model_and_tokenizer) -> None:
    """Two samples disagreeing in opposite directions (transformers #36002) must not swap features silently."""
    model, tok = model_and_tokenizer
    n = model.image_strategy.num_tokens((32, 32))
    img, pad = model.image_token_id, tok.pad_token_id
    # sample 0 claims one image but holds 2n placeholders; sample 1 claims one image but holds none
    ids = torch.tensor([[1] + [img] * (2 * n) + [2], [1, 2] + [pad] * (2 * n)])
    batch = dict(input_ids=ids, pixel_values=torch.randn(2, 3, 32, 32), image_sizes=torch.tensor([[32, 32]] * 2),
                 num_tiles=torch.tensor([1, 1]))
    model(**batch)  # batch totals agree: without per-sample counts this goes through
    with pytest.raises(FusionError):
        model(**batch, image_counts=torch.tensor([1, 1]))
