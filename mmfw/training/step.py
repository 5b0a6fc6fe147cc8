"""One optimizer step: the forward and backward passes of its micro-batches, the loss scaling, the all-reduce, and
what happens when the loss or the gradient is not finite.

The loss of a step is the sum of its token losses divided by the supervised tokens of the whole step (every
micro-batch, every process), so a step's gradient does not depend on how its samples were split. A step whose loss
or gradient norm is not finite on any process applies no update (:func:`handle_bad_step` decides whether training
goes on).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from mmfw.config.training import TrainingConfig
from mmfw.data.batch import VLMBatch
from mmfw.errors import DataError, FusionError
from mmfw.training.checkpoint import latest_checkpoint
from mmfw.training.errors import NonFiniteLossError
from mmfw.training.loss import IGNORE_INDEX, logit_positions, supervised_tokens, token_loss_sum
from mmfw.training.state import StageState

logger = logging.getLogger(__name__)


@dataclass
class StepResult:
    loss: float
    """Mean token loss of the step over every process."""
    bad: bool
    """The loss or the gradient norm was not finite on some process: the update was not applied."""
    real_tokens: int
    computed_tokens: int


def step_inputs(batch: VLMBatch, image_token_id: int, pad_token_id: int,
                device: torch.device) -> tuple[dict[str, Any], torch.Tensor]:
    """Model inputs (no labels: the loss is computed here) and the labels, image positions masked."""
    if batch.rows == 0:  # every sample of the micro-batch was skipped: one ignored token
        ids = torch.full((1, 1), int(pad_token_id), device=device)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, torch.full_like(ids, IGNORE_INDEX)
    labels = batch.labels.masked_fill(batch.input_ids == image_token_id, IGNORE_INDEX)
    return batch.model_inputs(), labels


def _forward(model: Any, inputs: dict[str, Any], labels: torch.Tensor, batch: VLMBatch) -> torch.Tensor:
    """The summed token loss of one micro-batch; a placeholder/image disagreement names its record."""
    positions = logit_positions(labels)
    try:
        logits = model(**inputs, use_cache=False, logits_to_keep=positions).logits
    except FusionError as err:
        raise DataError(f"a training batch does not fit the model: {err.naming_records(batch.record_ids())}"
                        ) from None
    return token_loss_sum(logits, labels, positions)


def train_step(acc: Accelerator, model: Any, optimizer: Any, scheduler: Any, micro: Sequence[VLMBatch],
               t: TrainingConfig, image_token_id: int, pad_token_id: int) -> StepResult:
    """Forward and backward over ``micro`` (this process's micro-batches of the step), then the update (skipped
    when the loss or gradient norm is not finite anywhere) and the scheduler step."""
    prepared = [step_inputs(b, image_token_id, pad_token_id, acc.device) for b in micro]
    local_tokens = sum(supervised_tokens(labels) for _, labels in prepared)
    step_tokens = int(acc.reduce(torch.tensor(local_tokens, device=acc.device), "sum"))
    scale = len(micro) * acc.num_processes / max(step_tokens, 1)
    loss_sum = torch.zeros((), device=acc.device)
    for (inputs, labels), batch in zip(prepared, micro, strict=True):
        with acc.accumulate(model):
            ce = _forward(model, inputs, labels, batch)
            acc.backward(ce * scale)
            loss_sum += ce.detach()
    grad_norm = acc.clip_grad_norm_(model.parameters(), t.max_grad_norm) if t.max_grad_norm is not None else None
    bad = ~torch.isfinite(loss_sum)
    if grad_norm is not None and t.mixed_precision != "fp16":  # fp16: the grad scaler skips such steps itself
        bad = bad | ~torch.isfinite(torch.as_tensor(grad_norm, device=acc.device))
    totals = acc.reduce(torch.stack([loss_sum.float(), bad.float()]), "sum")
    any_bad = bool(totals[1] > 0)
    if not any_bad:
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    scheduler.step()
    return StepResult(loss=float(totals[0]) / max(step_tokens, 1), bad=any_bad,
                      real_tokens=sum(b.real_tokens() for b in micro),
                      computed_tokens=sum(int(b.input_ids.numel()) for b in micro))


def handle_bad_step(state: StageState, result: StepResult, micro: Sequence[VLMBatch], t: TrainingConfig,
                    stage_path: Path, log: Callable[[dict[str, Any]], None]) -> None:
    """A non-finite loss or gradient norm: count the skipped update, or stop when ``max_bad_steps`` is spent."""
    state.bad_steps += 1
    loss, step = result.loss, state.global_step
    ids = [i for b in micro for i in b.ids]
    log({"train/bad_steps": state.bad_steps, "train/bad_loss": loss})
    if state.bad_steps <= t.max_bad_steps:
        logger.warning("step %d of stage %r: non-finite loss or gradient (%s); update skipped (%d of %d allowed)",
                       step, state.stage, loss, state.bad_steps, t.max_bad_steps)
        return
    ckpt = latest_checkpoint(stage_path)
    where = f"the last good checkpoint is {ckpt}" if ckpt else "no checkpoint was written yet"
    raise NonFiniteLossError(
        f"non-finite loss ({loss}) at step {step} of stage {state.stage!r}; training stopped without applying "
        f"the update ({where}{'; samples ' + str(ids[:8]) if ids else ''}). Lower the learning rate, keep "
        f"max_grad_norm set, or allow skipping such steps with training.max_bad_steps")
