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
:class:`~mmfw.data.stream_loader.StreamLoader` keeps the position of the last batch consumed from each stream and the number of batches
consumed; :meth:`~mmfw.data.stream_loader.StreamLoader.save_position` writes them per process into a checkpoint, and a resumed stream skips
to its window without decoding the records before it, rebuilds that window and drops the batches already trained
on: the run continues with exactly the next batch.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from typing import Any, Literal

from torch.utils.data import IterableDataset, get_worker_info

from mmfw.config.data import StreamConfig
from mmfw.data.conversation import parse_record
from mmfw.data.errors import DataError, RecordError
from mmfw.data.report import SkippedSample
from mmfw.data.sample import SampleBuilder
from mmfw.data.sources import RawRecord, StreamSource

__all__ = ["StreamingDataset"]

Mode = Literal["plain", "length", "pack"]
LENGTH_WINDOW_MULT = 50
"""Length grouping sorts windows of ``LENGTH_WINDOW_MULT * batch_size`` records (as the JSON sampler does)."""


def _rng(*parts: int) -> random.Random:
    return random.Random(hash(tuple(parts)) & 0xFFFFFFFF)


class _Batch(list):
    """A window's batch of items, with the stream position after it."""

    position: tuple[int, list[int]] = (0, [0, 0, 0])


class _Failure:
    """An error raised in a worker, re-raised as one line by the loader in the training process."""

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

    def loader(self, collate: Any) -> Any:
        """The :class:`~mmfw.data.stream_loader.StreamLoader` of this dataset (settings from
        :func:`~mmfw.data.stream_loader.build_training_stream`)."""
        from mmfw.data.stream_loader import StreamLoader

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
