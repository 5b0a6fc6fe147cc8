"""Streamed training data: shards spread over processes and DataLoader workers, batches formed in windows,
exact resume, memory and startup independent of the dataset's size.

**Streams.** With ``P`` processes of ``W`` workers there are ``S = P * W`` streams. Every epoch, the shards of all
sources are shuffled (seed and epoch only, so every process agrees) and stream ``s`` reads shards ``s, s + S, ...``;
with fewer shards than streams, the streams sharing a shard take every ``c``-th record of it. Each record is read by
exactly one stream per epoch. A stream passes its records through a shuffle buffer (``data.stream.shuffle_buffer``)
and never ends: its epochs follow one another, so the DataLoader takes batches from its workers in strict turn.

**Windows.** A stream cuts its records into windows and turns each window into batches: ``batch_size`` records
(one batch), ``50 * batch_size`` records sorted by token length (``training.group_by_length``), or
``data.stream.pack_window`` records packed first-fit into rows of ``pack_length`` tokens (``training.packing``).
Lengths are those of the samples just built, so nothing is computed before the first step.

**Resume.** Every batch carries its stream's position (epoch, first record of its window, batches of the window done).
:class:`StreamLoader` keeps the position of the last batch consumed from each stream and the number of batches
consumed; :meth:`StreamLoader.save_position` writes them per process into a checkpoint, and a resumed stream skips
to its window without decoding the records before it, rebuilds that window and drops the batches already trained
on: the run continues with exactly the next batch.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from mmfw.config import ConfigError
from mmfw.config.experiment import StreamConfig
from mmfw.data.conversation import parse_record
from mmfw.data.errors import DataError, RecordError
from mmfw.data.report import SkippedSample
from mmfw.data.sample import SampleBuilder
from mmfw.data.sources import RawRecord, StreamSource, open_source
from mmfw.data.sources.webdataset import INDEX_FILE

__all__ = ["StreamLoader", "StreamingDataset", "build_training_stream"]

Mode = Literal["plain", "length", "pack"]
LENGTH_WINDOW_MULT = 50
"""Length grouping sorts windows of ``LENGTH_WINDOW_MULT * batch_size`` records (as the JSON sampler does)."""


def _rng(*parts: int) -> random.Random:
    return random.Random(hash(tuple(parts)) & 0xFFFFFFFF)


class _Batch(list):
    """A window's batch of items, with the stream position after it."""

    position: tuple[int, list[int]] = (0, [0, 0, 0])


class _Failure:
    """An error raised in a worker, re-raised as one line by :class:`StreamLoader` in the training process."""

    def __init__(self, error: Exception) -> None:
        self.message, self.record = str(error), isinstance(error, RecordError)
        self.reason = getattr(error, "reason_code", "")


class StreamingDataset(IterableDataset):
    """The streams of one process (see module docstring); yields :class:`_Batch` es of items or skipped samples."""

    def __init__(self, sources: Sequence[StreamSource], builder: SampleBuilder, *, batch_size: int, seed: int,
                 cfg: StreamConfig, rank: int = 0, num_processes: int = 1, mode: Mode = "plain",
                 pack_capacity: int = 0, name: str = "data.train") -> None:
        self.sources, self.builder, self.batch_size, self.seed = list(sources), builder, batch_size, seed
        self.cfg, self.rank, self.num_processes, self.mode = cfg, rank, num_processes, mode
        self.pack_capacity, self.name = pack_capacity, name
        self.skipped: list[SkippedSample] = []  # nothing is rejected before loading: the stream reads no record
        self.resume: dict[int, list[int]] = {}
        self.offset = 0
        self.loader_args: dict[str, Any] = {"num_workers": 0, "batches_per_epoch": 1}
        self._units = [(k, shard) for k, src in enumerate(self.sources) for shard in src.shards()]

    @property
    def num_records(self) -> int | None:
        counts = [s.num_records() for s in self.sources]
        return None if None in counts else sum(counts)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.num_records or 0

    @property
    def augment(self) -> Any:
        return self.builder.augment

    @augment.setter
    def augment(self, value: Any) -> None:
        self.builder.augment = value

    def set_epoch(self, epoch: int) -> None:
        """No effect: each stream counts its own epochs."""

    def loader(self, collate: Any) -> StreamLoader:
        """The :class:`StreamLoader` of this dataset (settings from :func:`build_training_stream`)."""
        return StreamLoader(self, collate, **self.loader_args)

    # -- records ----------------------------------------------------------------------------------------------
    def assignment(self, epoch: int, s: int, streams: int) -> list[tuple[int, Any, int, int]]:
        """``(source, shard, offset, stride)`` that stream ``s`` of ``streams`` reads in ``epoch``, in order."""
        order = list(range(len(self._units)))
        _rng(self.seed, epoch).shuffle(order)
        n = len(order)
        if n >= streams:
            return [(*self._units[u], 0, 1) for u in order[s::streams]]
        unit = order[s % n]
        return [(*self._units[unit], s // n, len(range(s % n, streams, n)))]

    def records(self, epoch: int, s: int, streams: int) -> Iterator[RawRecord]:
        """Stream ``s``'s records of ``epoch``, through the shuffle buffer (none is decoded here)."""
        rng, size, buffer = _rng(self.seed, epoch, s, 1), self.cfg.shuffle_buffer, []
        for src, shard, offset, stride in self.assignment(epoch, s, streams):
            for rec in self.sources[src].records(shard, offset, stride):
                if size <= 1:
                    yield rec
                    continue
                buffer.append(rec)
                if len(buffer) >= size:
                    k = rng.randrange(len(buffer))
                    buffer[k], buffer[-1] = buffer[-1], buffer[k]
                    yield buffer.pop()
        rng.shuffle(buffer)
        yield from buffer

    def window_size(self) -> int:
        return {"plain": self.batch_size, "length": LENGTH_WINDOW_MULT * self.batch_size,
                "pack": self.cfg.pack_window}[self.mode]

    # -- batches ----------------------------------------------------------------------------------------------
    def _item(self, rec: RawRecord) -> dict[str, Any] | SkippedSample:
        conv, n = None, None
        try:
            raw, open_image = rec.load()
            conv = parse_record(raw, default_id=rec.location, image_token=self.builder.image_token)
            item, err, n = self.builder.build(conv, open_image, rec.index)
        except RecordError as e:
            item, err = None, e
        if err is None:
            return item
        rid = conv.id if conv is not None else None
        message = err.message if rid is None or repr(rid) in err.message else f"record {rid!r}: {err.message}"
        return SkippedSample(rec.location, rid, err.reason_code, message, index=rec.index, num_tokens=n)

    def batches(self, items: list[Any], key: tuple[int, ...]) -> list[list[Any]]:
        """One window's items -> its batches (see module docstring)."""
        if self.mode == "plain":
            return [items]
        good = [it for it in items if isinstance(it, dict)]
        bad = [it for it in items if not isinstance(it, dict)]
        if self.mode == "length":
            good.sort(key=lambda it: -len(it["input_ids"]))
            out = [good[i:i + self.batch_size] for i in range(0, len(good), self.batch_size)] or [[]]
            _rng(self.seed, *key).shuffle(out)
        else:
            rows: list[list[Any]] = []
            free: list[int] = []
            for it in good:
                n = len(it["input_ids"])
                r = next((r for r, space in enumerate(free) if space >= n), None)
                if r is None:
                    rows.append([])
                    free.append(self.pack_capacity)
                    r = len(rows) - 1
                rows[r].append(it)
                free[r] -= n
            out = [[{**it, "row": r} for r, row in enumerate(rows[b:b + self.batch_size]) for it in row]
                   for b in range(0, len(rows), self.batch_size)] or [[]]
        out[0] = out[0] + bad
        return out

    def __iter__(self) -> Iterator[_Batch | _Failure]:
        info = get_worker_info()
        w, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        logical = (w + self.offset) % workers
        s, streams = self.rank * workers + logical, self.num_processes * workers
        try:
            yield from self._stream(logical, s, streams)
        except DataError as e:
            yield _Failure(e)

    def _stream(self, logical: int, s: int, streams: int) -> Iterator[_Batch]:
        epoch, start, done = self.resume.get(logical, [0, 0, 0])
        size = self.window_size()
        while True:
            if self.builder.augment is not None:
                self.builder.augment.set_epoch(epoch)
            window: list[RawRecord] = []
            seen = 0
            for n, rec in enumerate(self.records(epoch, s, streams)):
                seen = n + 1
                if n < start:
                    continue  # resume: records before the window are skipped undecoded
                window.append(rec)
                if len(window) == size:
                    yield from self._window(window, epoch, n + 1 - size, done)
                    window, done = [], 0
            if window:
                yield from self._window(window, epoch, seen - len(window), done)
            if seen == 0:
                raise DataError(f"{self.name}: stream {s} of {streams} read no record in epoch {epoch} "
                                f"({len(self._units)} shard(s) for {streams} streams)")
            epoch, start, done = epoch + 1, 0, 0

    def _window(self, window: list[RawRecord], epoch: int, start: int, done: int) -> Iterator[_Batch]:
        batches = self.batches([self._item(r) for r in window], (epoch, start, 2))
        for k, b in enumerate(batches):
            if k < done:
                continue
            out = _Batch(b)
            out.position = (-1, [epoch, start, k + 1])
            yield out


class _Collate:
    def __init__(self, collate: Any, logical: int) -> None:
        self.collate = collate

    def __call__(self, batch: _Batch | _Failure) -> Any:
        if isinstance(batch, _Failure):
            return {"failure": batch}
        out = self.collate(list(batch))
        out["stream_position"] = list(batch.position[1])
        return out


class StreamLoader:
    """Batches of a :class:`StreamingDataset` for one process, ``batches_per_epoch`` per epoch (the trainer's epoch:
    its reports and schedule), on ``device``; keeps the stream positions for checkpoints (see module docstring)."""

    def __init__(self, dataset: StreamingDataset, collate: Any, *, num_workers: int, batches_per_epoch: int,
                 on_error: str = "skip", device: Any = None) -> None:
        self.dataset, self.collate, self.num_workers = dataset, collate, num_workers
        self.workers = max(1, num_workers)
        self.batches_per_epoch, self.on_error, self.device = max(1, batches_per_epoch), on_error, device
        self.consumed = 0
        self.positions: dict[int, list[int]] = {}
        self._it: Iterator[Any] | None = None

    def __len__(self) -> int:
        return self.batches_per_epoch

    def set_epoch(self, epoch: int) -> None:
        """No effect (the streams count their own epochs)."""

    def _iterator(self) -> Iterator[Any]:
        if self._it is None:
            self.dataset.offset = self.consumed % self.workers
            self.dataset.resume = dict(self.positions)
            loader = DataLoader(self.dataset, batch_size=None, collate_fn=_Collate(self.collate, 0),
                                num_workers=self.num_workers)
            self._it = iter(loader)
        return self._it

    def __iter__(self) -> Iterator[dict[str, Any]]:
        it = self._iterator()
        while True:
            batch = next(it)
            if "failure" in batch:
                f = batch["failure"]
                raise (RecordError(f.reason, f.message) if f.record else DataError(f.message))
            if self.on_error == "raise" and batch.get("skipped"):
                raise batch["skipped"][0].to_error()
            self.positions[self.consumed % self.workers] = batch.pop("stream_position")
            self.consumed += 1
            yield self._to_device(batch)
            if self.consumed % self.batches_per_epoch == 0:
                return

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.device is None:
            return batch
        return {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    # -- checkpoints ------------------------------------------------------------------------------------------
    def state(self) -> dict[str, Any]:
        return {"consumed": self.consumed, "workers": self.workers, "processes": self.dataset.num_processes,
                "positions": {str(k): v for k, v in self.positions.items()}}

    def save_position(self, directory: str | Path, rank: int) -> Path:
        """Write this process's position into ``directory/stream-RANK.json``."""
        path = Path(directory) / f"stream-{rank}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.state()), encoding="utf-8")
        return path

    def load_position(self, directory: str | Path, rank: int) -> None:
        """Continue from the position :meth:`save_position` wrote (before the first batch is taken)."""
        path = Path(directory) / f"stream-{rank}.json"
        if not path.is_file():
            raise DataError(f"{path}: the checkpoint has no stream position for process {rank}; it was written by "
                            "a run with other data or processes")
        state = json.loads(path.read_text(encoding="utf-8"))
        if (state["workers"], state["processes"]) != (self.workers, self.dataset.num_processes):
            raise DataError(f"{path}: written with {state['processes']} process(es) x {state['workers']} worker(s); "
                            f"resume with the same (now {self.dataset.num_processes} x {self.workers})")
        self.consumed = int(state["consumed"])
        self.positions = {int(k): v for k, v in state["positions"].items()}
        self._it = None


def build_training_stream(d: Any, tokenizer: Any, strategy: Any, fusion: Any, t: Any, acc: Any, seed: int
                          ) -> StreamingDataset:
    """The streamed training set of a ``data`` section ``d`` with the ``training`` section ``t``, for the process
    of ``acc`` (an Accelerator: rank, process count, device); :meth:`StreamingDataset.loader` makes its loader.
    Raises :class:`~mmfw.config.ConfigError` for settings a stream cannot follow."""
    if t.group_by_modality:
        raise ConfigError(["training.group_by_modality: not available for streamed datasets (use group_by_length "
                           "or packing)"])
    sources = [open_source(spec, f"data.train[{k}]", d.stream) for k, spec in enumerate(d.train)]
    builder = SampleBuilder(tokenizer, strategy, image_token=fusion.image_token, max_length=d.max_length,
                            image_markers=fusion.image_markers, system_prompt=d.system_prompt, truncation=d.truncation)
    mode: Mode = "pack" if t.packing else "length" if t.group_by_length else "plain"
    ds = StreamingDataset(sources, builder, batch_size=t.batch_size, seed=seed, cfg=d.stream,
                          rank=acc.process_index, num_processes=acc.num_processes, mode=mode,
                          pack_capacity=t.pack_length or d.max_length)
    n, micro = ds.num_records, (t.max_steps * t.gradient_accumulation_steps if t.max_steps else None)
    if mode == "pack" or n is None:
        if micro is None:
            why = ("the number of packed batches per epoch is not known" if mode == "pack"
                   else f"the shards' sizes are not known (no {INDEX_FILE} beside them)")
            raise ConfigError([f"training.max_steps: a streamed dataset needs max_steps here: {why} before the "
                               "data is read"])
        per_epoch = micro
    else:
        per_epoch = math.ceil(n / (acc.num_processes * t.batch_size))
    ds.loader_args = {"num_workers": t.num_workers, "batches_per_epoch": per_epoch, "on_error": d.on_error,
                      "device": acc.device}
    return ds
