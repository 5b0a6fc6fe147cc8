"""Samplers and padding-free packing: deterministic epochs, every sample once, rows within capacity, and the loss of
a packed batch equal to the loss of the same samples padded."""

from __future__ import annotations

import random

import pytest
import torch

from mmfw.config import load_config_dict
from mmfw.config.experiment import DatasetSpec
from mmfw.data.collator import VLMCollator
from mmfw.data.dataset import LlavaDataset
from mmfw.data.packing import PackedCollator, position_ids_for
from mmfw.model.builder import build_model
from mmfw.training.loss import supervised_tokens, token_loss_sum
from mmfw.training.sampling import (
    LengthGroupedBatchSampler,
    PackedBatchSampler,
    ShuffledBatchSampler,
    pack_rows,
)


def _skewed_lengths(n: int = 2000, seed: int = 0) -> list[int]:
    """Mostly short samples, a long tail (like instruction data): 80% in 20-120 tokens, 20% in 120-480."""
    rng = random.Random(seed)
    return [rng.randint(20, 120) if rng.random() < 0.8 else rng.randint(120, 480) for _ in range(n)]


def _flat(batches) -> list[int]:
    return [i if isinstance(i, int) else i[0] for b in batches for i in b]


@pytest.mark.parametrize("make", [
    lambda L: ShuffledBatchSampler(len(L), 16, seed=3),
    lambda L: LengthGroupedBatchSampler(L, 16, seed=3),
    lambda L: PackedBatchSampler(L, capacity=512, rows_per_batch=4, seed=3),
], ids=["shuffled", "length-grouped", "packed"])
def test_samplers_cover_each_sample_once_and_depend_only_on_seed_and_epoch(make) -> None:
    lengths = _skewed_lengths(500)
    a, b = make(lengths), make(lengths)
    a.set_epoch(1)
    b.set_epoch(1)
    first = list(a)
    assert first == list(b)  # same (seed, epoch), same batches, whatever happened before
    assert sorted(_flat(first)) == list(range(500))
    a.set_epoch(2)
    assert list(a) != first and sorted(_flat(list(a))) == list(range(500))
    assert len(a) == len(list(a))


def test_length_grouping_reduces_padding() -> None:
    lengths = _skewed_lengths()

    def efficiency(sampler) -> float:
        real = sum(lengths[i] for b in sampler for i in b)
        computed = sum(len(b) * max(lengths[i] for i in b) for b in sampler)
        return real / computed

    shuffled, grouped = efficiency(ShuffledBatchSampler(len(lengths), 16, 0)), efficiency(
        LengthGroupedBatchSampler(lengths, 16, 0))
    assert shuffled < 0.5 < 0.9 < grouped


def test_packing_fills_rows_on_skewed_lengths() -> None:
    lengths = _skewed_lengths()
    rows = pack_rows(range(len(lengths)), lengths, capacity=512)
    loads = [sum(lengths[i] for i in r) for r in rows]
    assert max(loads) <= 512
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    sampler = PackedBatchSampler(lengths, capacity=512, rows_per_batch=8, seed=0)
    real = computed = 0
    for batch in sampler:
        per_row: dict[int, int] = {}
        for i, r in batch:
            per_row[r] = per_row.get(r, 0) + lengths[i]
        real += sum(per_row.values())
        computed += len(per_row) * max(per_row.values())  # rows are padded to the longest row of the batch
    assert real / computed >= 0.95


def test_packed_batches_mix_clustered_lengths() -> None:
    """Lengths in clusters (1-, 2- and 3-turn conversations): every packed batch holds a mix, as a shuffled batch
    would. (Sorting by length before packing made rows of three short samples and batches of only those.)"""
    rng = random.Random(0)
    lengths = [rng.choice([36, 36, 53, 53, 53, 69, 69, 69]) for _ in range(4000)]
    sampler = PackedBatchSampler(lengths, capacity=128, rows_per_batch=14, seed=0)
    shares = []
    for batch in sampler:
        if len(batch) >= 20:  # not a window's last, small batch
            shares.append(sum(lengths[i] == 36 for i, _ in batch) / len(batch))
    assert len(shares) > 100
    assert 0.05 < min(shares) and max(shares) < 0.6, (min(shares), max(shares))
    assert abs(sum(shares) / len(shares) - 0.25) < 0.05


def test_position_ids_restart_per_sample_and_for_padding() -> None:
    assert position_ids_for([3, 2], 7).tolist() == [0, 1, 2, 0, 1, 0, 1]


@pytest.fixture(scope="module")
def model_and_items(registries, tokenizer_dir, synth_data):
    import copy

    from tests.conftest import TINY_MODEL

    model_cfg = copy.deepcopy(TINY_MODEL)
    model_cfg["llm"]["tokenizer"] = str(tokenizer_dir)
    cfg = load_config_dict({"model": model_cfg, "training": {"max_steps": 1}}, registries)
    torch.manual_seed(0)
    model, tokenizer = build_model(cfg.model, registries)
    ds = LlavaDataset([DatasetSpec(path=str(synth_data.eval))], tokenizer, model.image_strategy,
                      image_token="<image>", max_length=96)
    items = [ds[i] for i in range(6)]
    return model.eval(), tokenizer, items


def test_packed_loss_equals_unpacked_loss(model_and_items) -> None:
    model, tokenizer, items = model_and_items
    padded = VLMCollator(tokenizer.pad_token_id)(items)
    rows = [0, 0, 0, 1, 1, 2]  # three rows of 3, 2 and 1 samples
    packed = PackedCollator(tokenizer.pad_token_id)([{**it, "row": r} for it, r in zip(items, rows, strict=True)])
    assert packed.input_ids.shape[0] == 3 and packed.attention_mask is None
    assert supervised_tokens(packed.labels) == supervised_tokens(padded.labels)
    with torch.no_grad():
        out_p = model(**padded.model_inputs(), use_cache=False)
        out_k = model(**packed.model_inputs(), use_cache=False)
        hf = model(**padded.model_inputs(labels=True)).loss
    loss_p = token_loss_sum(out_p.logits, padded.labels) / supervised_tokens(padded.labels)
    loss_k = token_loss_sum(out_k.logits, packed.labels) / supervised_tokens(packed.labels)
    assert float(loss_k) == pytest.approx(float(loss_p), rel=1e-4)
    assert float(loss_p) == pytest.approx(float(hf), rel=1e-5)  # the same loss transformers computes
    # stronger: every real token's logits are the same, so no sample attends to another one in its row
    offsets = {0: 0, 1: 0, 2: 0}
    for b, (it, r) in enumerate(zip(items, rows, strict=True)):
        n = len(it["input_ids"])
        torch.testing.assert_close(out_k.logits[r, offsets[r]:offsets[r] + n], out_p.logits[b, :n], atol=1e-4,
                                   rtol=1e-4)
        offsets[r] += n
