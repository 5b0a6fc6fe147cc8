"""The training process's side of a stream: batches from the DataLoader workers, in turn, on the device, with the
position of every stream kept for checkpoints (see :mod:`mmfw.data.stream`)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from mmfw.config import ConfigError
from mmfw.data.batch import VLMBatch
from mmfw.data.errors import DataError, RecordError
from mmfw.data.sample import SampleBuilder
from mmfw.data.sources import open_source
from mmfw.data.sources.webdataset import INDEX_FILE
from mmfw.data.stream import Mode, StreamingDataset, _Batch, _Failure

__all__ = ["StreamLoader", "build_training_stream"]


class _Collate:
    def __init__(self, collate: Any) -> None:
        self.collate = collate

    def __call__(self, batch: _Batch | _Failure) -> tuple[VLMBatch | None, Any]:
        """``(batch, stream position after it)``, or ``(None, failure)`` when the stream itself failed."""
        if isinstance(batch, _Failure):
            return None, batch
        return self.collate(list(batch)), list(batch.position[1])


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
            loader = DataLoader(self.dataset, batch_size=None, collate_fn=_Collate(self.collate),
                                num_workers=self.num_workers)
            self._it = iter(loader)
        return self._it

    def __iter__(self) -> Iterator[VLMBatch]:
        it = self._iterator()
        while True:
            batch, position = next(it)
            if batch is None:
                f = position
                raise (RecordError(f.reason, f.message) if f.record else DataError(f.message))
            if self.on_error == "raise" and batch.skipped:
                raise batch.skipped[0].to_error()
            self.positions[self.consumed % self.workers] = position
            self.consumed += 1
            yield batch if self.device is None else batch.to(self.device)
            if self.consumed % self.batches_per_epoch == 0:
                return

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
