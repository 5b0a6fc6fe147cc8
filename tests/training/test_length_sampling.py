"""``training.group_by_length``: batches of similar length that cover every sample once per epoch, also when
Accelerate shards them over processes (a short batch anywhere in the epoch must not drop a round of batches)."""

from __future__ import annotations

import random

import pytest
from accelerate.data_loader import BatchSamplerShard

from mmfw.training.sampling import LengthGroupedBatchSampler


def _lengths(n: int, seed: int = 0) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(5, 300) for _ in range(n)]


@pytest.mark.parametrize("n,batch_size,mult", [(45, 4, 50), (103, 8, 3), (7, 4, 1)])
def test_every_sample_once_per_epoch_and_len_is_exact(n: int, batch_size: int, mult: int) -> None:
    s = LengthGroupedBatchSampler(_lengths(n), batch_size, seed=3, mult=mult)
    for epoch in range(3):
        s.set_epoch(epoch)
        batches = list(s)
        assert len(batches) == len(s)
        assert sorted(i for b in batches for i in b) == list(range(n))
        assert all(1 <= len(b) <= batch_size for b in batches)


@pytest.mark.parametrize("num_processes", [2, 3])
@pytest.mark.parametrize("seed", range(8))
def test_sharding_over_processes_loses_no_sample(num_processes: int, seed: int) -> None:
    n = 103
    s = LengthGroupedBatchSampler(_lengths(n, seed), batch_size=8, seed=seed, mult=3)  # several short batches
    shards = [list(BatchSamplerShard(s, num_processes=num_processes, process_index=p)) for p in range(num_processes)]
    assert len({len(sh) for sh in shards}) == 1  # every process takes the same number of steps
    assert {i for sh in shards for b in sh for i in b} == set(range(n))
    batches = list(s)  # each process gets whole batches of the sampler, in turn
    for p, sh in enumerate(shards):
        assert sh[:len(batches[p::num_processes])] == batches[p::num_processes]


def test_longest_batch_comes_first() -> None:
    lengths = _lengths(200)
    s = LengthGroupedBatchSampler(lengths, 8, seed=1, mult=4)
    first, *rest = list(s)
    assert max(lengths[i] for i in first) == max(lengths)
