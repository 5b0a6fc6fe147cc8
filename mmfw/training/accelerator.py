"""The run's :class:`~accelerate.Accelerator` and its trackers.

The trainer forms each optimizer step's window of micro-batches itself (across epoch ends), so Accelerate syncs
gradients every ``gradient_accumulation_steps``-th micro-batch and never early at the end of a data loader. Unless
Accelerate shards the model (FSDP, DeepSpeed, Megatron), model weights are saved in the checkpoint's model
directory (plain names + peft adapters) and Accelerate's ``state/`` holds only optimizer, scheduler and RNG states.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, GradientAccumulationPlugin

from mmfw.config import ConfigError, ExperimentConfig
from mmfw.config.experiment import ResolvedStage
from mmfw.training.run_layout import TENSORBOARD_DIR

_SHARDING = (DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM)


def _installed(tracker: str) -> bool:
    found = importlib.util.find_spec(tracker) is not None
    return found or (tracker == "tensorboard" and importlib.util.find_spec("tensorboardX") is not None)


def available_trackers(requested: Any) -> list[str]:
    """``training.trackers`` resolved: ``"auto"`` is tensorboard when installed; a named tracker must be installed."""
    if requested == "auto":
        return ["tensorboard"] if _installed("tensorboard") else []
    missing = [t for t in requested if not _installed(t)]
    if missing:
        raise ConfigError([f"training.trackers: {missing} requested but not installed (pip install {' '.join(missing)})"])
    return list(requested)


def make_accelerator(cfg: ExperimentConfig) -> Accelerator:
    """The run's Accelerator: mixed precision, trackers, and gradient accumulation driven by the trainer."""
    t = cfg.training
    if t.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError(["training.mixed_precision: fp16 needs a CUDA device; use bf16 (or 'no') on CPU"])
    trackers = available_trackers(t.trackers)
    return Accelerator(
        mixed_precision=t.mixed_precision,
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=t.gradient_accumulation_steps,
                                                                sync_with_dataloader=False),
        step_scheduler_with_optimizer=False,
        log_with=trackers or None,
        project_dir=str(cfg.run_dir),
    )


def accelerate_saves_model(acc: Accelerator) -> bool:
    """Whether Accelerate shards the model, and so saves (and gathers) its weights itself."""
    return acc.distributed_type in _SHARDING


def keep_weights_out_of_state(acc: Accelerator) -> None:
    """Leave model weights out of Accelerate's ``save_state``/``load_state`` (they live in the model directory),
    unless Accelerate shards the model."""
    if not accelerate_saves_model(acc):
        acc.register_save_state_pre_hook(lambda models, weights, out: weights.clear())
        acc.register_load_state_pre_hook(lambda models, inp: models.clear())


def start_stage(acc: Accelerator, stage: ResolvedStage) -> None:
    """Free the previous stage's memory (from the second stage on: ``free_memory`` runs a full garbage collection)
    and set the stage's gradient accumulation (Accelerate's GradientState is process-wide: set both of its
    settings)."""
    if stage.index > 0:
        acc.free_memory()
    acc.gradient_state.plugin_kwargs.update(num_steps=stage.training.gradient_accumulation_steps,
                                            sync_with_dataloader=False)


def init_trackers(acc: Accelerator, cfg: ExperimentConfig) -> None:
    if acc.log_with:
        hparams = {"name": cfg.name, "seed": cfg.seed, "stages": ",".join(s.name for s in cfg.stage_plan())}
        acc.init_trackers(TENSORBOARD_DIR, config=hparams)
