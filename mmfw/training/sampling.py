"""Batch samplers: shuffled, length-grouped, modality-grouped and packed; deterministic per ``(seed, epoch)`` so a resumed run sees
exactly the batches an uninterrupted one would.

Every sampler yields lists of dataset indices, one list per micro-batch; the packed sampler yields
``(index, row)`` pairs, which :class:`RowTaggedDataset` and :class:`~mmfw.data.packing.PackedCollator` turn into
packed rows. Samplers know nothing about processes: Accelerate shards their batches across processes.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from mmfw.image_strategies.base import ImageInput

logger = logging.getLogger(__name__)

MEGABATCH_MULT = 50
"""Length grouping sorts windows of ``MEGABATCH_MULT * batch_size`` shuffled samples (as transformers does)."""


def _permutation(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


class _EpochSampler(Sampler):
    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch


class ShuffledBatchSampler(_EpochSampler):
    """Fixed-size batches of a fresh permutation per epoch (the last one may be smaller)."""

    def __init__(self, num_samples: int, batch_size: int, seed: int, shuffle: bool = True) -> None:
        super().__init__(seed)
        self.num_samples, self.batch_size, self.shuffle = num_samples, batch_size, shuffle
        self.drop_last = False

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = _permutation(self.num_samples, self.seed, self.epoch) if self.shuffle else list(range(self.num_samples))
        for i in range(0, self.num_samples, self.batch_size):
            yield order[i:i + self.batch_size]


class LengthGroupedBatchSampler(_EpochSampler):
    """Batches of similar length: shuffle, sort windows of ``mult * batch_size`` by length, cut into batches, shuffle
    the batches (the longest batch first, so memory problems show up at step 1).

    The last batch of each window may be smaller, and after the shuffle it can come anywhere: ``batch_size`` is
    None so that Accelerate shards whole batches across processes (given a batch size, it drops every round of
    batches whose last one is short, and with it samples of the epoch).
    """

    def __init__(self, lengths: Sequence[int], batch_size: int, seed: int, mult: int = MEGABATCH_MULT) -> None:
        super().__init__(seed)
        self.lengths, self.rows_per_batch, self.mult = list(lengths), batch_size, mult
        self.batch_size = None  # batches differ in size (see the class docstring)
        self.drop_last = False

    def __len__(self) -> int:
        window = self.mult * self.rows_per_batch
        n = len(self.lengths)
        return sum(-(-min(window, n - w) // self.rows_per_batch) for w in range(0, n, window))

    def __iter__(self) -> Iterator[list[int]]:
        order = _permutation(len(self.lengths), self.seed, self.epoch)
        window = self.mult * self.rows_per_batch
        batches: list[list[int]] = []
        for w in range(0, len(order), window):
            chunk = sorted(order[w:w + window], key=lambda i: -self.lengths[i])
            batches += [chunk[i:i + self.rows_per_batch] for i in range(0, len(chunk), self.rows_per_batch)]
        if not batches:
            return
        longest = max(range(len(batches)), key=lambda b: self.lengths[batches[b][0]])
        first = batches.pop(longest)
        rest = [batches[i] for i in _permutation(len(batches), self.seed + 1, self.epoch)]
        yield first
        yield from rest


class ModalityGroupedBatchSampler(_EpochSampler):
    """Batches of one modality each (samples with images, or text-only samples), grouped by length within each
    modality as :class:`LengthGroupedBatchSampler` does, then shuffled together, the longest batch first (LLaVA's
    ``group_by_modality_length``: a text-only batch skips the vision tower, and no batch pads text to image length).

    Each modality's last batch may be smaller, and after the shuffle it can come anywhere: ``batch_size`` is None so
    that Accelerate shards whole batches across processes (it would otherwise fill a short batch up with samples of
    the other modality, or drop a round of batches).
    """

    def __init__(self, lengths: Sequence[int], has_image: Sequence[bool], batch_size: int, seed: int,
                 mult: int = MEGABATCH_MULT) -> None:
        super().__init__(seed)
        if len(lengths) != len(has_image):
            raise ValueError(f"{len(lengths)} lengths but {len(has_image)} modality flags")
        self.lengths, self.has_image = list(lengths), [bool(x) for x in has_image]
        self.rows_per_batch, self.mult = batch_size, mult
        self.batch_size = None  # batches differ in size (see the class docstring)
        self.drop_last = False

    def __len__(self) -> int:
        images = sum(self.has_image)
        text = len(self.has_image) - images
        return -(-images // self.rows_per_batch) + -(-text // self.rows_per_batch)

    def _batches(self, epoch: int) -> list[list[int]]:
        order = _permutation(len(self.lengths), self.seed, epoch)
        window = self.mult * self.rows_per_batch
        batches: list[list[int]] = []
        for modality in (True, False):
            indices = [i for i in order if self.has_image[i] == modality]
            for w in range(0, len(indices), window):
                chunk = sorted(indices[w:w + window], key=lambda i: -self.lengths[i])
                batches += [chunk[i:i + self.rows_per_batch] for i in range(0, len(chunk), self.rows_per_batch)]
        if not batches:
            return []
        longest = max(range(len(batches)), key=lambda b: self.lengths[batches[b][0]])
        first = batches.pop(longest)
        return [first] + [batches[i] for i in _permutation(len(batches), self.seed + 1, epoch)]

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._batches(self.epoch)


def sample_has_image(dataset: Any) -> list[bool]:
    """Whether each sample of ``dataset`` has at least one image (from its records, no image is opened)."""
    return [bool(dataset.image_paths(i)) for i in range(len(dataset))]


def pack_rows(indices: Sequence[int], lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """First-fit packing of ``indices``, in the order given, into rows of at most ``capacity`` tokens: each sample goes
    to the first row it fits in, else opens a new one; a sample longer than ``capacity`` gets a row of its own.

    Samples are not sorted by length first (best-fit decreasing would pack a little tighter): with lengths that come
    in clusters (one-, two- and three-turn conversations, say), sorting puts samples of one cluster together, so
    rows, and batches of rows, would hold one kind of sample each. In shuffled order a row is a random mix.
    """
    rows: list[list[int]] = []
    free: list[int] = []
    for i in indices:
        n = lengths[i]
        for r, space in enumerate(free):
            if space >= n:
                rows[r].append(i)
                free[r] -= n
                break
        else:
            rows.append([i])
            free.append(max(capacity - n, 0))
    return rows


class PackedBatchSampler(_EpochSampler):
    """Micro-batches of ``rows_per_batch`` rows, each row several samples totalling at most ``capacity`` tokens.

    Samples are shuffled per epoch and packed first-fit in windows (:func:`pack_rows`); consecutive rows form a batch
    and the batches are shuffled, so a batch holds a random mix of samples. Yields ``(index, row)`` pairs, ``row``
    numbering the rows of the batch.
    """

    def __init__(self, lengths: Sequence[int], capacity: int, rows_per_batch: int, seed: int,
                 window_rows: int = 64) -> None:
        super().__init__(seed)
        self.lengths, self.capacity, self.rows_per_batch = list(lengths), capacity, rows_per_batch
        self.window_rows = max(window_rows, rows_per_batch)
        self.batch_size = None  # batches differ in size (Accelerate shards them as they come)
        self.drop_last = False
        self._len_cache: dict[int, int] = {}

    def _batches(self, epoch: int) -> list[list[list[int]]]:
        order = _permutation(len(self.lengths), self.seed, epoch)
        mean = max(1.0, sum(self.lengths) / max(len(self.lengths), 1))
        per_window = max(1, int(self.window_rows * self.capacity / mean))
        rows: list[list[int]] = []
        for w in range(0, len(order), per_window):
            rows += pack_rows(order[w:w + per_window], self.lengths, self.capacity)
        batches = [rows[b:b + self.rows_per_batch] for b in range(0, len(rows), self.rows_per_batch)]
        return [batches[i] for i in _permutation(len(batches), self.seed + 7, epoch)]

    def __len__(self) -> int:
        if self.epoch not in self._len_cache:
            self._len_cache[self.epoch] = len(self._batches(self.epoch))
        return self._len_cache[self.epoch]

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        for batch in self._batches(self.epoch):
            yield [(i, r) for r, row in enumerate(batch) for i in row]


class RowTaggedDataset(Dataset):
    """``dataset[(i, row)]`` -> ``dataset[i]`` with ``"row": row`` added (for packed batches)."""

    def __init__(self, dataset: Any) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> Any:
        i, row = key
        item = self.dataset[i]
        if isinstance(item, dict):
            item = {**item, "row": row}
        return item


def _sample_length(dataset: Any, i: int) -> int:
    images = []
    for p in dataset.image_paths(i):
        try:
            with Image.open(p) as im:
                images.append(ImageInput(torch.empty(0), im.size))
        except OSError:
            return 0  # the sample will be skipped when loaded
    try:
        return len(dataset.encode(i, images))
    except ValueError:  # RecordError and friends: skipped when loaded
        return 0


def sample_lengths(dataset: Any, cache_dir: str | Path | None = None) -> list[int]:
    """Token length of every sample (images expanded, truncation applied; 0 for samples that will be skipped),
    computed from image headers and the tokenizer only. Cached in ``cache_dir`` by a key over the records,
    image-token counts (image start/end tokens included) and ``max_length``."""
    key = None
    if cache_dir is not None:
        h = hashlib.sha256()
        h.update(json.dumps([dataset.max_length, dataset.truncation,
                             dataset.system_prompt, len(dataset)]).encode())
        for i in range(len(dataset)):
            conv = dataset.conversation(i)
            h.update(json.dumps([conv.id, conv.messages, [str(p) for p in dataset.image_paths(i)]],
                                default=str).encode())
        h.update(str(len(dataset.tokenizer)).encode())
        h.update(repr(dataset.image_markers).encode())
        h.update(repr(dataset.strategy.cfg).encode())
        key = Path(cache_dir) / f"lengths-{h.hexdigest()[:16]}.json"
        if key.exists():
            return json.loads(key.read_text())
    lengths = [_sample_length(dataset, i) for i in range(len(dataset))]
    if key is not None:
        key.parent.mkdir(parents=True, exist_ok=True)
        tmp = key.with_suffix(".tmp")
        tmp.write_text(json.dumps(lengths))
        tmp.replace(key)
    return lengths
