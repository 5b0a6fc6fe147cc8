"""Training with Hugging Face Accelerate: ordered stages, per-module policies, exact resume; the same loop on a
laptop CPU, one GPU or many (``accelerate launch``).

A run trains the stages of :meth:`~mmfw.config.experiment.ExperimentConfig.stage_plan` in order. Stage N builds the
model, loads stage N-1's output (LoRA adapters merged into the base weights), applies its own policy and trains;
its output directory appears atomically when it is complete, and a complete stage is never trained again (the
layout: :mod:`mmfw.training.run_layout`).

One optimizer step = ``gradient_accumulation_steps`` micro-batches per process, taken from a stream that runs across
epoch boundaries (:func:`~mmfw.training.loader.micro_batches`); the step itself is :func:`~mmfw.training.step.train_step`.
Resuming restores the model, optimizer, scheduler and RNG states and the :class:`~mmfw.training.state.StageState`,
so a resumed run ends with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm

from mmfw.components import Registries
from mmfw.config import ExperimentConfig
from mmfw.config.experiment import ResolvedStage
from mmfw.data.stream_loader import StreamLoader
from mmfw.training.accelerator import (
    accelerate_saves_model,
    init_trackers,
    keep_weights_out_of_state,
    make_accelerator,
    start_stage,
)
from mmfw.training.checkpoint import STATE_DIR, resume_checkpoint
from mmfw.training.evaluate import EvaluationStopped, evaluate_stage
from mmfw.training.feature_cache import EncoderFeatureCache
from mmfw.training.loader import build_stage_loader, micro_batches
from mmfw.training.metrics import MetricsLogger, ThroughputMeter
from mmfw.training.optim import build_optimizer, build_scheduler
from mmfw.training.plots import draw_run_plots_quietly
from mmfw.training.policy import check_stage_policies
from mmfw.training.run_layout import (
    check_run_dir,
    prepare_stage_dir,
    stage_dir,
    stage_output_dir,
    stage_record,
    start_run_dir,
    write_final_metrics,
)
from mmfw.training.run_lock import acquire_run_lock, check_process_group
from mmfw.training.saving import checkpoint_of_step, publish_stage, save_checkpoint
from mmfw.training.signals import TrainingInterrupted, stop_agreed
from mmfw.training.stage_model import build_stage_model
from mmfw.training.state import StageState
from mmfw.training.step import handle_bad_step, train_step

logger = logging.getLogger(__name__)


class Trainer:
    """Trains every stage of an :class:`ExperimentConfig`; components are resolved through ``registries``.

    Args:
        resume: continue the run in ``cfg.output_dir`` (finished stages are skipped, the current one restarts from
            its latest checkpoint). Without it, a run directory that already holds progress is an error unless
            ``overwrite`` is set, which deletes the run's previous outputs first.
        meta_model: the VLM of ``cfg.model`` on the meta device that validation built
            (:meth:`~mmfw.training.validate.ValidationContext.meta_model`, as ``mmfw train`` passes it); the policy
            pre-check uses it instead of building the model on the meta device again. None: the pre-check builds it.
    """

    def __init__(self, cfg: ExperimentConfig, registries: Registries, plugin_manager: Any | None = None,
                 accelerator: Accelerator | None = None, progress: bool = True, resume: bool = False,
                 overwrite: bool = False, meta_model: Any | None = None) -> None:
        self.cfg, self.registries = cfg, registries
        self.hooks = plugin_manager.hook if plugin_manager is not None else None
        self.plan, self.run_dir = cfg.stage_plan(), cfg.run_dir
        self.progress, self.resume, self.overwrite = progress, resume, overwrite
        self.accelerator = accelerator or make_accelerator(cfg)
        keep_weights_out_of_state(self.accelerator)
        self.metrics = MetricsLogger(self.accelerator, self.run_dir)
        self.state: StageState | None = None
        self.stream: StreamLoader | None = None  # the loader of a streamed training set (it keeps its position)
        self.stage: ResolvedStage | None = None
        self.model: Any = None
        self.run_lock: Any = None
        self.stop: Any = None
        """A :class:`mmfw.training.signals.StopRequest`; when set, training stops after the step with a checkpoint."""
        self._meta_model = meta_model

    # -- run -----------------------------------------------------------------------------------------------------
    def train(self) -> dict[str, float]:
        """Train every stage that has not finished; returns the final stage's metrics (flat ``group/name`` keys)."""
        try:
            return self._train()
        finally:
            if self.run_lock is not None:
                self.run_lock.release()
                self.run_lock = None

    def _prepare_run(self) -> None:
        """Checks (on every process, so that all of them stop together), then the main process sets up the run."""
        acc = self.accelerator
        check_process_group(acc.num_processes)  # robust: launched processes that do not form one group
        check_stage_policies(self.cfg, self.registries, self._meta_model)
        self._meta_model = None  # only the pre-check needs it
        if acc.is_main_process and self.run_lock is None:  # robust: one trainer per run directory
            self.run_lock = acquire_run_lock(self.run_dir)
        progress = check_run_dir(self.run_dir, self.cfg, self.registries, self.resume, self.overwrite)
        acc.wait_for_everyone()
        if acc.is_main_process:
            start_run_dir(self.run_dir, self.cfg, progress, self.overwrite)
            self.metrics.start(self.resume)
        acc.wait_for_everyone()
        init_trackers(acc, self.cfg)

    def _train(self) -> dict[str, float]:
        self._prepare_run()
        per_stage: dict[str, dict[str, float]] = {}
        init_from: Path | None = None
        final: dict[str, float] = {}
        for stage in self.plan:
            out_dir = stage_output_dir(self.run_dir, stage, stage.index == len(self.plan) - 1)
            record = stage_record(out_dir)
            if record is not None:
                logger.info("stage %r already finished (%s); not training it again", stage.name, out_dir)
                final = record.get("metrics", {})
                self.metrics.tracker_step += int(record.get("steps", 0))
            else:
                resume_from = resume_checkpoint(stage_dir(self.run_dir, stage)) if self.resume else None
                final = self._run_stage(stage, init_from, resume_from, out_dir)
            per_stage[stage.name] = final
            init_from = out_dir
        if self.accelerator.is_main_process:
            steps = self.state.global_step if self.state is not None else 0
            write_final_metrics(self.run_dir, final, None if self.plan[0].implicit else per_stage, steps)
            draw_run_plots_quietly(self.run_dir)
        if self.accelerator.log_with:
            self.accelerator.end_training()
        return final

    # -- a stage -------------------------------------------------------------------------------------------------
    def _setup_stage(self, stage: ResolvedStage, init_from: Path | None, resume_from: Path | None) -> None:
        acc, t = self.accelerator, stage.training
        self.stage, self.stage_path = stage, stage_dir(self.run_dir, stage)
        start_stage(acc, stage)
        if acc.is_main_process:
            prepare_stage_dir(self.stage_path, stage)
        acc.wait_for_everyone()
        set_seed(self.cfg.seed + stage.index)
        model, self.tokenizer, applied = build_stage_model(self.cfg, self.registries, stage, init_from, resume_from,
                                                           load_resumed_weights=not accelerate_saves_model(acc))
        self.trainable = applied.counts
        self.data, self.loader, self.batch_sampler = build_stage_loader(acc, self.cfg, stage, self.tokenizer,
                                                                        model.image_strategy, self.stage_path)
        self.train_set, self.eval_set = self.data.train_set, self.data.eval_set
        self.feature_cache = None
        if t.feature_cache is not None:
            self.feature_cache = EncoderFeatureCache(t.feature_cache, model.vision_encoder, acc.process_index).install()
        optimizer = build_optimizer(model, t, applied.lr_scale, applied.decays)
        self.stream = self.loader if isinstance(self.loader, StreamLoader) else None
        if self.stream is None:
            self.model, self.optimizer, self.loader = acc.prepare(model, optimizer, self.loader)
        else:  # a streamed loader is sharded over processes by mmfw.data.stream, not by Accelerate
            self.model, self.optimizer = acc.prepare(model, optimizer)
        per_epoch = max(1, len(self.loader))
        total = t.max_steps or max(1, math.ceil(t.epochs * per_epoch / t.gradient_accumulation_steps))
        self.scheduler = acc.prepare(build_scheduler(self.optimizer.optimizer, t, total))
        self.state = StageState(stage.name, total)
        if resume_from is not None:
            acc.load_state(str(resume_from / STATE_DIR))
            self.state = StageState.from_checkpoint(resume_from, stage.name, total)
            if self.stream is not None:
                self.stream.load_position(resume_from, acc.process_index)
            self.metrics.tracker_step += self.state.global_step
            logger.info("resumed stage %r from %s (step %d, epoch %d, batch %d)", stage.name, resume_from,
                        self.state.global_step, self.state.epoch, self.state.batches_in_epoch)
        self.metrics.stage, self.metrics.state = stage, self.state
        logger.info("stage %r: %d steps (%d examples, batch %d x accumulation %d x %d process(es)%s); trainable %s",
                    stage.name, total, len(self.train_set), t.batch_size, t.gradient_accumulation_steps,
                    acc.num_processes, ", packed" if t.packing else "", self.trainable)

    def _run_stage(self, stage: ResolvedStage, init_from: Path | None, resume_from: Path | None,
                   out_dir: Path) -> dict[str, float]:
        self._setup_stage(stage, init_from, resume_from)
        acc, t, state = self.accelerator, stage.training, self.state
        if self.hooks is not None:
            self.hooks.mmfw_train_start(config=self.cfg, run_dir=self.run_dir)
        bar = tqdm(total=state.total_steps, initial=state.global_step, desc=stage.name, dynamic_ncols=True,
                   disable=not (self.progress and acc.is_local_main_process))
        self.model.train()
        stream = micro_batches(acc, self.loader, self.batch_sampler, self.data, state, self.metrics.log)
        meter, last = ThroughputMeter(acc), {}
        image_token_id = acc.unwrap_model(self.model).image_token_id
        try:
            while not state.done:
                micro = [next(stream) for _ in range(t.gradient_accumulation_steps)]
                result = train_step(acc, self.model, self.optimizer, self.scheduler, micro, t, image_token_id,
                                    self.tokenizer.pad_token_id)
                state.global_step += 1
                self.metrics.tracker_step += 1
                if result.bad:
                    handle_bad_step(state, result, micro, t, self.stage_path, self.metrics.log)
                bar.update(1)
                state.tokens_seen += result.real_tokens
                meter.add(result.loss, not result.bad, result.real_tokens, result.computed_tokens)
                if state.global_step % t.log_every == 0 or state.done:
                    last = self.metrics.log_window(meter, self.scheduler.get_last_lr()[0], bar)
                if t.eval_every and state.global_step % t.eval_every == 0 and not state.done:
                    self.evaluate(generate=True)
                if t.save_every and state.global_step % t.save_every == 0 and not state.done:
                    self.save_checkpoint()
                if self.stop is not None and self._stop_requested():
                    self._interrupt()
        finally:
            bar.close()
            if self.feature_cache is not None:
                self.feature_cache.close()
        final = {f"train/{k}": v for k, v in last.items()}
        final.update(self.evaluate(generate=True))
        final["run/steps"] = state.global_step
        record = {"stage": stage.name, "index": stage.index, "steps": state.global_step, "metrics": final,
                  "trainable_parameters": self.trainable}
        publish_stage(acc, self.model, self.tokenizer, self.cfg, stage, out_dir, record, self.stage_path)
        if acc.is_main_process and self.hooks is not None:
            self.hooks.mmfw_train_end(metrics=final, run_dir=self.run_dir)
        acc.wait_for_everyone()
        return final

    # -- evaluation, saving, stopping ----------------------------------------------------------------------------
    def evaluate(self, generate: bool) -> dict[str, float]:
        """Eval loss (and, with ``generate``, exact-match accuracy) on the main process; a stop requested during it
        (SIGTERM, Ctrl-C) ends it at the next batch and stops the run with a checkpoint of the step."""
        acc, metrics = self.accelerator, {}
        if self.eval_set is not None and acc.is_main_process:
            try:
                metrics = evaluate_stage(acc, self.model, self.tokenizer, self.data, self.stage,
                                         self.state.global_step, self.run_dir, generate,
                                         should_stop=lambda: self.stop is not None and self.stop.requested)
            except EvaluationStopped:
                logger.warning("evaluation at step %d stopped by %s", self.state.global_step, self.stop.signal)
            else:
                self.metrics.log(metrics)
                logger.info("stage %r step %d: %s", self.stage.name, self.state.global_step,
                            {k: round(v, 4) for k, v in metrics.items()})
                if self.hooks is not None:
                    self.hooks.mmfw_evaluation_end(metrics=metrics, step=self.state.global_step, run_dir=self.run_dir)
        acc.wait_for_everyone()
        if self.stop is not None and self.eval_set is not None and self._stop_requested():  # all processes agree
            self._interrupt()
        return metrics

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step-N`` atomically (all processes take part; the main one writes the files)."""
        return save_checkpoint(self.accelerator, self.model, self.tokenizer, self.cfg, self.stage_path, self.state,
                               self.stage.training.keep_last, self.stream)

    def _stop_requested(self) -> bool:
        """Whether any process received SIGTERM / SIGINT (all processes agree, so that they stop together)."""
        return stop_agreed(self.stop, self.accelerator)

    def _interrupt(self) -> None:
        """Write a checkpoint of the finished step and stop, naming it and the command that continues."""
        ckpt = checkpoint_of_step(self.accelerator, self.model, self.tokenizer, self.cfg, self.stage_path, self.state,
                                  self.stage.training.keep_last, self.stream)
        raise TrainingInterrupted(
            f"stopped by {self.stop.signal or 'a signal'} after step {self.state.global_step} of {self.state.total_steps} of "
            f"stage {self.stage.name!r}; checkpoint {ckpt} written. `mmfw train {self.run_dir} --resume` continues "
            "from it")


__all__ = ["Trainer"]
