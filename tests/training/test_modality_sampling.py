"""``training.group_by_modality``: batches of one modality each, grouped by length, deterministic per (seed, epoch),
sharded per process by Accelerate without mixing modalities, and through the trainer with gradient accumulation."""

from __future__ import annotations

import copy
import json
import random

import pytest
import torch
from accelerate.data_loader import BatchSamplerShard

from mmfw.config import load_config_dict
from mmfw.training.sampling import ModalityGroupedBatchSampler
from mmfw.training.trainer import Trainer


def _data(n: int = 103, seed: int = 0) -> tuple[list[int], list[bool]]:
    rng = random.Random(seed)
    has_image = [rng.random() < 0.6 for _ in range(n)]
    lengths = [rng.randint(60, 200) if img else rng.randint(5, 120) for img in has_image]
    return lengths, has_image


def _pure(batch: list[int], has_image: list[bool]) -> bool:
    return len({has_image[i] for i in batch}) == 1


def test_batches_are_one_modality_and_cover_every_sample_once() -> None:
    lengths, has_image = _data()
    s = ModalityGroupedBatchSampler(lengths, has_image, batch_size=8, seed=1)
    for epoch in range(3):
        s.set_epoch(epoch)
        batches = list(s)
        assert all(_pure(b, has_image) for b in batches)
        assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
        assert len(batches) == len(s) == -(-sum(has_image) // 8) + -(-(len(lengths) - sum(has_image)) // 8)
        assert sum(len(b) < 8 for b in batches) <= 2  # at most one short batch per modality
        assert max(lengths[i] for i in batches[0]) == max(lengths)  # the longest batch comes first


def test_deterministic_per_seed_and_epoch() -> None:
    lengths, has_image = _data()

    def order(seed: int, epoch: int) -> list[list[int]]:
        s = ModalityGroupedBatchSampler(lengths, has_image, batch_size=8, seed=seed)
        s.set_epoch(epoch)
        return list(s)

    assert order(0, 0) == order(0, 0)
    assert order(0, 0) != order(0, 1) and order(0, 0) != order(1, 0)
    # the batches of both modalities are interleaved, not one modality after the other
    kinds = [has_image[b[0]] for b in order(0, 0)]
    assert kinds != sorted(kinds) and kinds != sorted(kinds, reverse=True)


def test_grouped_by_length_within_each_modality() -> None:
    lengths, has_image = _data(400)
    s = ModalityGroupedBatchSampler(lengths, has_image, batch_size=8, seed=0, mult=1000)  # one window: fully sorted
    for modality in (True, False):
        batches = sorted((b for b in s if has_image[b[0]] == modality), key=lambda b: -max(lengths[i] for i in b))
        for longer, shorter in zip(batches, batches[1:], strict=False):
            assert min(lengths[i] for i in longer) >= max(lengths[i] for i in shorter)
    spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in
              ModalityGroupedBatchSampler(lengths, has_image, batch_size=8, seed=0)]
    rng = random.Random(0)
    random_batches = [rng.sample(range(len(lengths)), 8) for _ in range(len(spread))]
    random_spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in random_batches]
    assert sum(spread) < 0.3 * sum(random_spread)


@pytest.mark.parametrize("num_processes", [2, 3])
def test_sharding_across_processes_keeps_batches_pure(num_processes: int) -> None:
    lengths, has_image = _data()
    s = ModalityGroupedBatchSampler(lengths, has_image, batch_size=8, seed=0)
    s.set_epoch(2)
    shards = [list(BatchSamplerShard(s, num_processes=num_processes, process_index=p)) for p in range(num_processes)]
    assert len({len(sh) for sh in shards}) == 1  # every process takes the same number of steps
    assert all(_pure(b, has_image) for sh in shards for b in sh)
    assert sorted({i for sh in shards for b in sh for i in b}) == list(range(len(lengths)))
    # each process gets whole batches of the sampler, in turn
    batches = list(s)
    for p, sh in enumerate(shards):
        assert sh[:len(batches[p::num_processes])] == batches[p::num_processes]


def test_packing_is_refused(tiny_experiment, registries) -> None:
    exp = copy.deepcopy(tiny_experiment)
    exp["training"].update(group_by_modality=True, packing=True)
    with pytest.raises(Exception, match="group_by_modality: packed rows mix samples"):
        load_config_dict(exp, registries)


@pytest.fixture
def mixed_train(synth_data, tmp_path):
    """The first 40 training records, every other one made text-only."""
    records = json.loads(open(synth_data.train).read())[:40]
    for r in records[::2]:
        del r["image"]
        for turn in r["conversations"]:
            turn["value"] = turn["value"].replace("<image>\n", "").replace("<image>", "")
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps(records))
    return path


def test_trainer_with_gradient_accumulation(experiment, mixed_train, synth_data, registries) -> None:
    exp = copy.deepcopy(experiment)
    exp["data"]["train"] = [{"path": str(mixed_train), "image_root": str(synth_data.images.parent)}]
    exp["data"]["eval"] = []
    exp["training"].update(group_by_modality=True, gradient_accumulation_steps=2, max_steps=3, batch_size=4)
    torch.set_num_threads(1)
    trainer = Trainer(load_config_dict(exp, registries), registries, progress=False)
    trainer.train()
    assert isinstance(trainer.batch_sampler, ModalityGroupedBatchSampler)
    seen = 0
    for batch in trainer.loader:
        counts = batch.image_counts.tolist()
        assert len(set(c > 0 for c in counts)) == 1, counts
        seen += len(counts)
    assert seen == 40
