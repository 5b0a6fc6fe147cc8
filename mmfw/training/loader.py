"""A stage's data: its datasets, the training data loader (the batch sampler and collator a stage's settings
choose) and the endless stream of micro-batches the step loop reads.

:func:`build_train_loader` is the one place that picks how training batches are formed: packed rows, batches of one
modality, batches of similar length, shuffled batches, or the batches of a streamed dataset (which shards over
processes and workers, batches and keeps its position itself: :mod:`mmfw.data.stream`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from torch.utils.data import DataLoader, Subset

from mmfw.config import ConfigError, ExperimentConfig
from mmfw.config.experiment import ResolvedStage
from mmfw.data.augment import ImageAugmenter
from mmfw.data.batch import VLMBatch
from mmfw.data.collator import VLMCollator
from mmfw.data.dataset import build_dataset
from mmfw.data.packing import PackedCollator
from mmfw.data.report import DataReport
from mmfw.data.stream import StreamingDataset
from mmfw.data.stream_loader import StreamLoader, build_training_stream
from mmfw.training.evaluate import require_usable
from mmfw.training.sampling import (
    LengthGroupedBatchSampler,
    ModalityGroupedBatchSampler,
    PackedBatchSampler,
    RowTaggedDataset,
    ShuffledBatchSampler,
    sample_has_image,
    sample_lengths,
)
from mmfw.training.state import StageState


@dataclass
class StageData:
    """The datasets of a stage, the report that counts skipped samples and the (padded) collator."""

    train_set: Any
    eval_set: Any | None
    report: DataReport
    collator: VLMCollator


def build_stage_data(cfg: ExperimentConfig, stage: ResolvedStage, tokenizer: Any, strategy: Any,
                     acc: Accelerator) -> StageData:
    """Training and eval datasets of ``stage`` (training images augmented; the eval set capped and checked to hold
    at least one usable sample, so that a run never ends with an eval over 0 samples). Streamed training sources
    (``hf``, ``webdataset``) give a :class:`~mmfw.data.stream.StreamingDataset` for the process of ``acc``."""
    d = stage.data
    if not d.train:
        raise ConfigError([f"{'data' if stage.implicit else f'stages[{stage.index}].data'}.train: no training "
                           "data configured"])
    fusion = cfg.model.fusion

    def make(specs: Any, name: str) -> Any:
        return build_dataset(specs, d, tokenizer, strategy, image_token=fusion.image_token, name=name,
                             image_markers=fusion.image_markers)

    seed = cfg.seed + 1000 * stage.index
    train_set = (build_training_stream(d, tokenizer, strategy, fusion, stage.training, acc, seed) if d.train[0].streamed
                 else make(d.train, "data.train"))
    if d.augment is not None:  # training images only; the eval set is never augmented
        train_set.augment = ImageAugmenter(d.augment, seed)
    eval_set = make(d.eval, "data.eval") if d.eval else None
    if eval_set is not None and d.eval_max_samples and len(eval_set) > d.eval_max_samples:
        eval_set = Subset(eval_set, range(d.eval_max_samples))
    if eval_set is not None:
        require_usable(eval_set, "data.eval")
    report = DataReport.for_dataset(train_set, d.max_skip_ratio if d.on_error == "skip" else None, name="data.train")
    return StageData(train_set, eval_set, report, VLMCollator(tokenizer.pad_token_id, padding_side="right"))


def shared_sample_lengths(acc: Accelerator, dataset: Any, cache_dir: Path) -> list[int]:
    """:func:`sample_lengths`, computed by the main process first (the others then read its cache)."""
    lengths = sample_lengths(dataset, cache_dir) if acc.is_main_process else None
    acc.wait_for_everyone()
    return lengths if lengths is not None else sample_lengths(dataset, cache_dir)


def build_train_loader(stage: ResolvedStage, dataset: Any, pad_token_id: int, seed: int,
                       lengths: Callable[[], list[int]]) -> tuple[DataLoader, Any]:
    """The training data loader of ``stage`` and its batch sampler (deterministic per seed and epoch).

    ``lengths`` gives every sample's token length; it is called only when the batches depend on it.
    """
    t = stage.training
    collate: Callable[[list[Any]], VLMBatch] = VLMCollator(pad_token_id, padding_side="right")
    if isinstance(dataset, StreamingDataset):  # a streamed loader shards, batches and resumes itself
        stream = dataset.loader(PackedCollator(pad_token_id) if t.packing else collate)
        return stream, stream
    if t.packing:
        sampler: Any = PackedBatchSampler(lengths(), t.pack_length or stage.data.max_length, t.batch_size, seed)
        dataset, collate = RowTaggedDataset(dataset), PackedCollator(pad_token_id)
    elif t.group_by_modality:
        sampler = ModalityGroupedBatchSampler(lengths(), sample_has_image(dataset), t.batch_size, seed)
    elif t.group_by_length:
        sampler = LengthGroupedBatchSampler(lengths(), t.batch_size, seed)
    else:
        sampler = ShuffledBatchSampler(len(dataset), t.batch_size, seed)
    loader = DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=t.num_workers,
                        generator=torch.Generator().manual_seed(seed))
    return loader, sampler


def build_stage_loader(acc: Accelerator, cfg: ExperimentConfig, stage: ResolvedStage, tokenizer: Any, strategy: Any,
                       stage_path: Path) -> tuple[StageData, DataLoader, Any]:
    """A stage's data (:func:`build_stage_data`), its training loader and that loader's batch sampler (sample
    lengths cached under ``stage_path``)."""
    data = build_stage_data(cfg, stage, tokenizer, strategy, acc)
    loader, sampler = build_train_loader(stage, data.train_set, tokenizer.pad_token_id, cfg.seed + 1000 * stage.index,
                                         lambda: shared_sample_lengths(acc, data.train_set, stage_path / ".cache"))
    return data, loader, sampler


def micro_batches(acc: Accelerator, loader: Any, sampler: Any, data: StageData, state: StageState,
                  log: Callable[[dict[str, Any]], None]) -> Iterator[VLMBatch]:
    """Micro-batches forever, epoch after epoch, starting at ``state``'s position (which it advances); each epoch's
    data report is logged when it ends."""
    while True:
        sampler.set_epoch(state.epoch)
        data.train_set.set_epoch(state.epoch)
        loader.set_epoch(state.epoch)
        skip = state.batches_in_epoch if not isinstance(loader, StreamLoader) else 0  # a stream resumes itself
        for batch in acc.skip_first_batches(loader, skip) if skip else loader:
            state.batches_in_epoch += 1
            data.report.observe(batch)
            yield batch
        log({"epoch": state.epoch, **data.report.end_epoch()})
        state.epoch += 1
        state.batches_in_epoch = 0
