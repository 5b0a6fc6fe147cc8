"""Saving during training: checkpoints of a stage and the published output of a finished stage.

Every process takes part (Accelerate's state and, when it shards the model, the gathered weights); the main process
writes the files. A checkpoint appears atomically (:mod:`mmfw.training.checkpoint`), and a write that fails for
lack of space leaves the previous checkpoint as it was and says how much room is needed.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from mmfw.config import ExperimentConfig
from mmfw.config.experiment import ResolvedStage
from mmfw.training.accelerator import accelerate_saves_model
from mmfw.training.checkpoint import (
    STATE_DIR,
    commit_checkpoint,
    failed_write_error,
    is_write_failure,
    latest_checkpoint,
    publish_dir,
    read_trainer_state,
    staging_dir,
    staging_path,
    write_model_dir,
)
from mmfw.training.run_layout import FINAL_METRICS, STAGE_DONE
from mmfw.training.state import StageState

logger = logging.getLogger(__name__)


def gathered_weights(acc: Accelerator, model: Any) -> dict[str, torch.Tensor] | None:
    """Full plain-named weights gathered by Accelerate when it shards the model (FSDP/DeepSpeed), else None."""
    if not accelerate_saves_model(acc):
        return None
    from mmfw.training.lora import lora_components, plain_key

    state = acc.get_state_dict(model)
    wrapped = list(lora_components(acc.unwrap_model(model)))
    return {pk: v for k, v in state.items() if (pk := plain_key(k, wrapped)) is not None}


def save_checkpoint(acc: Accelerator, model: Any, tokenizer: Any, cfg: ExperimentConfig, stage_path: Path,
                    state: StageState, keep_last: int, stream: Any | None = None) -> Path | None:
    """Write ``checkpoints/step-N`` of ``state``'s step atomically; returns it on the main process. A streamed
    loader (``stream``) writes every process's stream position into it too."""
    step = state.global_step
    if acc.is_main_process:
        staging_dir(stage_path, step)
    acc.wait_for_everyone()
    tmp = staging_path(stage_path, step)
    weights = gathered_weights(acc, model)
    final = None
    try:
        acc.save_state(str(tmp / STATE_DIR))
        if stream is not None:
            stream.save_position(tmp, acc.process_index)
            acc.wait_for_everyone()
        if acc.is_main_process:
            write_model_dir(acc.unwrap_model(model), tokenizer, cfg, tmp, weights)
            final = commit_checkpoint(tmp, step, state.as_dict(), keep_last)
    except (OSError, RuntimeError) as e:  # robust: a full disk leaves the previous checkpoint as it was
        if not is_write_failure(e):
            raise
        raise failed_write_error(e, tmp, stage_path, f"checkpoint step-{step}") from e
    acc.wait_for_everyone()
    return final


def checkpoint_of_step(acc: Accelerator, model: Any, tokenizer: Any, cfg: ExperimentConfig, stage_path: Path,
                       state: StageState, keep_last: int, stream: Any | None = None) -> Path:
    """The checkpoint of ``state``'s step: the latest one if it is of that step, else one written now."""
    step = state.global_step
    ckpt = latest_checkpoint(stage_path)
    if ckpt is None or read_trainer_state(ckpt).get("global_step") != step:
        ckpt = save_checkpoint(acc, model, tokenizer, cfg, stage_path, state, keep_last, stream) or \
            staging_path(stage_path, step).parent / f"step-{step}"
    return ckpt


def publish_stage(acc: Accelerator, model: Any, tokenizer: Any, cfg: ExperimentConfig, stage: ResolvedStage,
                  out_dir: Path, record: dict[str, Any], stage_path: Path) -> None:
    """Write the stage's model directory with its completion record (``stage.json``) and publish it atomically
    as ``out_dir``; a multi-stage run also gets the record as the stage's ``metrics.json``."""
    weights = gathered_weights(acc, model)
    if acc.is_main_process:
        tmp = out_dir.parent / f".{out_dir.name}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        write_model_dir(acc.unwrap_model(model), tokenizer, cfg, tmp, weights)
        text = json.dumps(record, indent=2) + "\n"
        (tmp / STAGE_DONE).write_text(text, encoding="utf-8")
        publish_dir(tmp, out_dir)
        if not stage.implicit:
            (stage_path / FINAL_METRICS).write_text(text, encoding="utf-8")
        logger.info("stage %r finished: %s", stage.name, out_dir)
