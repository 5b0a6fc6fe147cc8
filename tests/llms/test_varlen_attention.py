"""``attn_implementation: sdpa_varlen``: per-sample attention in packed rows, the values of ``sdpa`` everywhere."""

from __future__ import annotations

import copy

import pytest
import torch

from mmfw.config import load_config_dict
from mmfw.config.experiment import DatasetSpec
from mmfw.data.collator import VLMCollator
from mmfw.data.dataset import LlavaDataset
from mmfw.data.packing import PackedCollator, position_ids_for
from mmfw.llms.attention import packed_segments
from mmfw.model.builder import build_model
from mmfw.training.loss import supervised_tokens, token_loss_sum

ROWS = [0, 0, 0, 1, 1, 2]  # three packed rows of 3, 2 and 1 samples


def test_packed_segments_reads_restarting_position_ids() -> None:
    pos = torch.stack([position_ids_for([3, 2], 7), position_ids_for([7], 7)])
    assert packed_segments(pos, 2, 7) == [[0, 3, 5], [0]]
    assert packed_segments(torch.arange(7).expand(2, 7), 2, 7) is None  # one sample per row: not packed
    assert packed_segments(torch.arange(4, 11).unsqueeze(0), 1, 7) is None  # a continuation (KV cache)
    assert packed_segments(None, 2, 7) is None


@pytest.fixture(scope="module")
def models_and_items(registries, tokenizer_dir, synth_data):
    from tests.conftest import TINY_MODEL

    built = {}
    for impl in ("sdpa", "sdpa_varlen"):
        model_cfg = copy.deepcopy(TINY_MODEL)
        model_cfg["llm"]["tokenizer"] = str(tokenizer_dir)
        model_cfg["llm"]["attn_implementation"] = impl
        cfg = load_config_dict({"model": model_cfg, "training": {"max_steps": 1}}, registries)
        torch.manual_seed(0)
        built[impl] = build_model(cfg.model, registries)
    model, tokenizer = built["sdpa"]
    built["sdpa_varlen"][0].load_state_dict(model.state_dict())
    ds = LlavaDataset([DatasetSpec(path=str(synth_data.eval))], tokenizer, model.image_strategy,
                      image_token="<image>", max_length=96)
    items = [ds[i] for i in range(6)]
    return built["sdpa"][0], built["sdpa_varlen"][0], tokenizer, items


def _loss(model, batch):
    out = model(**batch.model_inputs(), use_cache=False)
    return token_loss_sum(out.logits, batch.labels) / supervised_tokens(batch.labels), out.logits


def test_packed_rows_attend_per_sample_with_sdpas_values(models_and_items, monkeypatch) -> None:
    import transformers.integrations.sdpa_attention as hf_sdpa

    sdpa, varlen, tokenizer, items = models_and_items
    packed = PackedCollator(tokenizer.pad_token_id)([{**it, "row": r} for it, r in zip(items, ROWS, strict=True)])
    width = packed.input_ids.shape[1]
    lengths: list[int] = []
    real = hf_sdpa.sdpa_attention_forward

    def spy(module, query, *args, **kwargs):
        lengths.append(query.shape[2])
        return real(module, query, *args, **kwargs)

    loss_ref, logits_ref = _loss(sdpa, packed)
    loss_ref.backward()
    monkeypatch.setattr(hf_sdpa, "sdpa_attention_forward", spy)
    loss_var, logits_var = _loss(varlen, packed)
    loss_var.backward()
    monkeypatch.undo()
    # every LLM layer ran attention once per sample and once per row's padding, never over a whole row
    pads = [width - sum(len(it["input_ids"]) for it, r in zip(items, ROWS, strict=True) if r == row)
            for row in range(3)]
    per_layer = sorted([len(it["input_ids"]) for it in items] + [p for p in pads if p])
    layers = sdpa.llm.model.config.num_hidden_layers
    assert sorted(lengths) == sorted(per_layer * layers)
    torch.testing.assert_close(loss_var, loss_ref, rtol=1e-5, atol=0)
    torch.testing.assert_close(logits_var, logits_ref, rtol=1e-4, atol=1e-4)
    checked = 0
    for (name, p_ref), (_, p_var) in zip(sdpa.named_parameters(), varlen.named_parameters(), strict=True):
        if p_ref.grad is not None:
            scale = p_ref.grad.abs().max().clamp_min(1e-6)  # a key bias has a zero gradient: rounding only
            assert float((p_var.grad - p_ref.grad).abs().max() / scale) < 1e-4, name
            checked += 1
    assert checked > 10
    sdpa.zero_grad(set_to_none=True)
    varlen.zero_grad(set_to_none=True)


def test_padded_batches_and_generation_are_plain_sdpa(models_and_items) -> None:
    sdpa, varlen, tokenizer, items = models_and_items
    padded = VLMCollator(tokenizer.pad_token_id)(items[:4])
    assert padded.attention_mask is not None and not bool(padded.attention_mask.all())  # really padded
    with torch.no_grad():
        torch.testing.assert_close(_loss(varlen, padded)[1], _loss(sdpa, padded)[1], rtol=0, atol=0)
        one = VLMCollator(tokenizer.pad_token_id)(items[:1]).model_inputs()
        a = sdpa.generate(**one, max_new_tokens=6, do_sample=False)
        b = varlen.generate(**one, max_new_tokens=6, do_sample=False)
    assert a.shape[1] == 6 and torch.equal(a, b)


def test_an_attention_without_position_ids_is_a_located_error() -> None:
    from mmfw.errors import ConfigError
    from mmfw.llms.attention import varlen_attention

    q = torch.zeros(1, 2, 5, 4)
    with pytest.raises(ConfigError, match=r"model\.llm\.attn_implementation: 'sdpa_varlen' .* use 'sdpa'"):
        varlen_attention(torch.nn.Linear(1, 1), q, q, q, None)
