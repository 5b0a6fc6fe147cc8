"""Training with Hugging Face Accelerate: ordered stages, per-module policies, exact resume; the same loop on a
laptop CPU, one GPU or many (``accelerate launch``).

A run trains the stages of :meth:`~mmfw.config.experiment.ExperimentConfig.stage_plan` in order. Stage N builds the
model, loads stage N-1's output (LoRA adapters merged into the base weights), applies its own policy and trains;
its output directory appears atomically when it is complete, and a complete stage is never trained again. Layout::

    RUN_DIR/config.yaml  metrics.jsonl  metrics.json  tensorboard/
    RUN_DIR/model/                         the final model (a model directory, see mmfw.model.io)
    RUN_DIR/checkpoints/step-N/            single-stage runs
    RUN_DIR/stages/NAME/checkpoints/step-N multi-stage runs; NAME/model is the output of a stage but the last

One optimizer step = ``gradient_accumulation_steps`` micro-batches per process, taken from a stream that runs across
epoch boundaries; the loss is the sum of token losses divided by the supervised tokens of the whole step (all
micro-batches, all processes), so a step's gradient does not depend on how its samples were split. Resuming restores
the model, optimizer, scheduler and RNG states and skips the batches already seen in the epoch (the batch order is a
function of the seed and the epoch only), so a resumed run ends with exactly the weights of an uninterrupted one.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, GradientAccumulationPlugin, set_seed
from safetensors.torch import load_file
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from mmfw.components import Registries
from mmfw.config import ConfigError, ExperimentConfig, load_config, save_config
from mmfw.config.experiment import ResolvedStage
from mmfw.config.loader import RESOLVED_CONFIG_NAME
from mmfw.config.validate import ConfigContext
from mmfw.data.augment import ImageAugmenter
from mmfw.data.collator import VLMCollator
from mmfw.data.dataset import build_dataset
from mmfw.data.report import DataReport
from mmfw.data.stream_loader import StreamLoader, build_training_stream
from mmfw.model.builder import WEIGHTS_NAME, build_model, load_weights
from mmfw.model.fusion import FusionError
from mmfw.model.io import FINAL_MODEL_DIR
from mmfw.training.checkpoint import (
    STATE_DIR,
    checkpoint_dirs,
    commit_checkpoint,
    failed_write_error,
    is_write_failure,
    latest_checkpoint,
    publish_dir,
    read_trainer_state,
    remove_stale,
    resume_checkpoint,
    staging_dir,
    staging_path,
    write_model_dir,
)
from mmfw.training.data_prep import prepare_data
from mmfw.training.errors import NonFiniteLossError, RunExistsError
from mmfw.training.evaluate import (
    PREDICTIONS_FILE,
    evaluate_accuracy,
    evaluate_loss,
    require_usable,
    write_predictions,
)
from mmfw.training.feature_cache import EncoderFeatureCache
from mmfw.training.lora import load_adapter_weights, load_adapters, load_plain_state_dict
from mmfw.training.loss import IGNORE_INDEX, logit_positions, supervised_tokens, token_loss_sum
from mmfw.training.optim import build_optimizer, build_scheduler
from mmfw.training.packing import PackedCollator, real_tokens
from mmfw.training.plots import PLOTS_DIR, draw_run_plots_quietly
from mmfw.training.policy import apply_policy, stage_policy_counts
from mmfw.training.run_lock import acquire_run_lock, check_process_group
from mmfw.training.sampling import (
    LengthGroupedBatchSampler,
    ModalityGroupedBatchSampler,
    PackedBatchSampler,
    RowTaggedDataset,
    ShuffledBatchSampler,
    sample_has_image,
    sample_lengths,
)
from mmfw.training.signals import TrainingInterrupted

logger = logging.getLogger(__name__)

METRICS_LOG = "metrics.jsonl"
FINAL_METRICS = "metrics.json"
STAGES_DIR = "stages"
STAGE_DONE = "stage.json"
"""Written into a stage's output directory before it is published: the stage's name, steps and final metrics."""
TENSORBOARD_DIR = "tensorboard"
_RUN_ENTRIES = (RESOLVED_CONFIG_NAME, METRICS_LOG, FINAL_METRICS, FINAL_MODEL_DIR, "checkpoints", STAGES_DIR,
                TENSORBOARD_DIR, PREDICTIONS_FILE, PLOTS_DIR)
_MODEL_KEYS = ("input_ids", "attention_mask", "pixel_values", "image_sizes", "num_tiles", "position_ids")


# -- run layout ---------------------------------------------------------------------------------------------------
def stage_dir(run_dir: Path, stage: ResolvedStage) -> Path:
    return run_dir if stage.implicit else run_dir / STAGES_DIR / stage.name


def stage_output_dir(run_dir: Path, stage: ResolvedStage, last: bool) -> Path:
    return run_dir / FINAL_MODEL_DIR if last else stage_dir(run_dir, stage) / FINAL_MODEL_DIR


def stage_record(output_dir: Path) -> dict[str, Any] | None:
    """The completion record of a stage output, or ``None`` if the stage has not finished."""
    path = output_dir / STAGE_DONE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def run_progress(run_dir: Path, cfg: ExperimentConfig) -> list[str]:
    """What a run directory already holds (finished stages, checkpoints), as short descriptions."""
    plan = cfg.stage_plan()
    found = []
    for stage in plan:
        out = stage_output_dir(run_dir, stage, stage.index == len(plan) - 1)
        if stage_record(out) is not None or (out / WEIGHTS_NAME).exists():
            found.append(f"stage {stage.name!r} finished")
        elif ckpt := latest_checkpoint(stage_dir(run_dir, stage)):
            found.append(f"stage {stage.name!r} checkpoint {ckpt.name}")
    return found


def clear_run(run_dir: Path) -> None:
    """Delete what a training run writes in ``run_dir`` (and nothing else)."""
    for name in _RUN_ENTRIES:
        p = run_dir / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def _available_trackers(requested: Any) -> list[str]:
    if requested == "auto":
        return ["tensorboard"] if (importlib.util.find_spec("tensorboard") or importlib.util.find_spec("tensorboardX")
                                   ) else []
    missing = [t for t in requested if importlib.util.find_spec("tensorboard" if t == "tensorboard" else t) is None
               and not (t == "tensorboard" and importlib.util.find_spec("tensorboardX"))]
    if missing:
        raise ConfigError([f"training.trackers: {missing} requested but not installed (pip install {' '.join(missing)})"])
    return list(requested)


def make_accelerator(cfg: ExperimentConfig) -> Accelerator:
    """The run's Accelerator: mixed precision, trackers, and gradient accumulation driven by the trainer."""
    t = cfg.training
    if t.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError(["training.mixed_precision: fp16 needs a CUDA device; use bf16 (or 'no') on CPU"])
    trackers = _available_trackers(t.trackers)
    return Accelerator(
        mixed_precision=t.mixed_precision,
        gradient_accumulation_plugin=GradientAccumulationPlugin(num_steps=t.gradient_accumulation_steps,
                                                                sync_with_dataloader=False),
        step_scheduler_with_optimizer=False,
        log_with=trackers or None,
        project_dir=str(cfg.run_dir),
    )


class _WithIds:
    """A collate function that also returns the ids of the samples it kept (``batch["ids"]``, for messages)."""

    def __init__(self, collate: Any) -> None:
        self.collate = collate

    def __call__(self, items: list[Any]) -> dict[str, Any]:
        batch = self.collate(items)
        batch["ids"] = [item["id"] for item in items if isinstance(item, dict) and "id" in item]
        return batch


class Trainer:
    """Trains every stage of an :class:`ExperimentConfig`; components are resolved through ``registries``.

    Args:
        resume: continue the run in ``cfg.output_dir`` (finished stages are skipped, the current one restarts from
            its latest checkpoint). Without it, a run directory that already holds progress is an error unless
            ``overwrite`` is set, which deletes the run's previous outputs first.
    """

    def __init__(self, cfg: ExperimentConfig, registries: Registries, plugin_manager: Any | None = None,
                 accelerator: Accelerator | None = None, progress: bool = True, resume: bool = False,
                 overwrite: bool = False) -> None:
        self.cfg = cfg
        self.registries = registries
        self.hooks = plugin_manager.hook if plugin_manager is not None else None
        self.plan = cfg.stage_plan()
        self.run_dir = cfg.run_dir
        self.progress = progress
        self.resume = resume
        self.overwrite = overwrite
        self.accelerator = accelerator or make_accelerator(cfg)
        self._accelerate_saves_model = self.accelerator.distributed_type in (
            DistributedType.FSDP, DistributedType.DEEPSPEED, DistributedType.MEGATRON_LM)
        if not self._accelerate_saves_model:
            # Model weights live in the checkpoint's model directory (plain names + peft adapters); Accelerate's
            # state/ holds only optimizer, scheduler and RNG states.
            self.accelerator.register_save_state_pre_hook(lambda models, weights, out: weights.clear())
            self.accelerator.register_load_state_pre_hook(lambda models, inp: models.clear())
        self.global_step = 0
        self.total_steps = 0
        self.model: Any = None
        self.stage: ResolvedStage | None = None
        self.total_steps_done = 0
        """Optimizer steps of every stage so far (the x axis of trackers)."""
        self.run_lock: Any = None
        self.stop: Any = None
        """A :class:`mmfw.training.signals.StopRequest`; when set, training stops after the step with a checkpoint."""

    # -- run -----------------------------------------------------------------------------------------------------
    def _check_policies(self) -> None:
        """Check every stage's policy against the model (built on the meta device) before anything trains, so a
        LoRA target that matches nothing in stage 2 fails now, not after stage 1. Skipped while a file the model
        reads (e.g. the tokenizer of ``data.build_tokenizer``) is one the run generates and it is not there yet: the
        stage checks it when it starts, after its data are prepared."""
        generated = ConfigContext(self.cfg, self.registries)
        pending = [src for c in self.cfg.model.components().values() for src in c.sources().values()
                   if generated.is_generated(src) and not Path(src).exists()]
        if pending:
            logger.debug("policy pre-check skipped until %s are generated", pending)
            return
        try:
            counts = stage_policy_counts(self.cfg, self.registries)
        except ConfigError:
            raise
        except Exception as e:  # a component that cannot be built on the meta device: checked at stage start
            logger.debug("policy pre-check skipped (%s: %s)", type(e).__name__, e)
            return
        for name, c in counts.items():
            logger.info("stage %r trains %s parameters (%s)", name, f"{c['total']:,}",
                        ", ".join(f"{k} {v:,}" for k, v in c.items() if k != "total" and v))

    def _prepare_run(self) -> None:
        """Checks (on every process, so that all of them stop together), then the main process sets up the run."""
        acc = self.accelerator
        check_process_group(acc.num_processes)  # robust: launched processes that do not form one group
        self._check_policies()
        if acc.is_main_process and self.run_lock is None:  # robust: one trainer per run directory
            self.run_lock = acquire_run_lock(self.run_dir)
        progress = run_progress(self.run_dir, self.cfg) if self.run_dir.exists() else []
        if progress and not (self.resume or self.overwrite):
            raise RunExistsError(f"{self.run_dir} already holds a run ({'; '.join(progress)}); pass --resume to "
                                 "continue it or --overwrite to start over")
        if self.resume and (self.run_dir / RESOLVED_CONFIG_NAME).exists():
            self._check_resumable()
        acc.wait_for_everyone()
        if acc.is_main_process:
            if progress and self.overwrite:
                logger.warning("--overwrite: deleting the previous run in %s (%s)", self.run_dir, "; ".join(progress))
                clear_run(self.run_dir)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.cfg, self.run_dir / RESOLVED_CONFIG_NAME)
            if not (self.resume and (self.run_dir / METRICS_LOG).exists()):
                (self.run_dir / METRICS_LOG).write_text("", encoding="utf-8")
        acc.wait_for_everyone()
        if acc.log_with:
            hparams = {"name": self.cfg.name, "seed": self.cfg.seed, "stages": ",".join(s.name for s in self.plan)}
            acc.init_trackers(TENSORBOARD_DIR, config=hparams)

    def _check_resumable(self) -> None:
        saved = load_config(self.run_dir / RESOLVED_CONFIG_NAME, self.registries)
        if saved.model != self.cfg.model:
            raise ConfigError([f"model: differs from the run being resumed ({self.run_dir / RESOLVED_CONFIG_NAME}); "
                               "start a new run (another output_dir) or --overwrite"])
        if [s.name for s in saved.stage_plan()] != [s.name for s in self.plan]:
            raise ConfigError([f"stages: {[s.name for s in self.plan]} differ from the run being resumed "
                               f"({[s.name for s in saved.stage_plan()]})"])
        changed = [k for k in ("seed", "data", "training", "stages") if getattr(saved, k) != getattr(self.cfg, k)]
        if changed:
            logger.warning("resuming with a config that differs from the run's in %s; the result will not be the "
                           "one of an uninterrupted run", changed)

    def train(self) -> dict[str, float]:
        """Train every stage that has not finished; returns the final stage's metrics (flat ``group/name`` keys)."""
        try:
            return self._train()
        finally:
            if self.run_lock is not None:
                self.run_lock.release()
                self.run_lock = None

    def _train(self) -> dict[str, float]:
        self._prepare_run()
        per_stage: dict[str, dict[str, float]] = {}
        init_from: Path | None = None
        final: dict[str, float] = {}
        for stage in self.plan:
            last = stage.index == len(self.plan) - 1
            out_dir = stage_output_dir(self.run_dir, stage, last)
            record = stage_record(out_dir)
            if record is not None:
                logger.info("stage %r already finished (%s); not training it again", stage.name, out_dir)
                final = record.get("metrics", {})
                self.total_steps_done += int(record.get("steps", 0))
            else:
                resume_from = resume_checkpoint(stage_dir(self.run_dir, stage)) if self.resume else None
                final = self._run_stage(stage, init_from, resume_from, out_dir)
            per_stage[stage.name] = final
            init_from = out_dir
        self._write_final_metrics(final, per_stage)
        if self.accelerator.log_with:
            self.accelerator.end_training()
        return final

    def _write_final_metrics(self, final: dict[str, float], per_stage: dict[str, dict[str, float]]) -> None:
        if not self.accelerator.is_main_process:
            return
        nested: dict[str, Any] = {}
        for key, value in final.items():
            group, _, name = key.partition("/")
            nested.setdefault(group, {})[name] = value
        nested.setdefault("run", {})["steps"] = int(final.get("run/steps", self.global_step))
        if not self.plan[0].implicit:
            nested["stages"] = per_stage
        (self.run_dir / FINAL_METRICS).write_text(json.dumps(nested, indent=2) + "\n", encoding="utf-8")
        draw_run_plots_quietly(self.run_dir)

    # -- stage setup ---------------------------------------------------------------------------------------------
    def _policy_where(self, stage: ResolvedStage) -> str:
        return "training.policy" if stage.implicit else f"stages[{stage.index}].policy"

    def _setup_stage(self, stage: ResolvedStage, init_from: Path | None, resume_from: Path | None) -> None:
        cfg, acc, t = self.cfg, self.accelerator, stage.training
        self.stage, self.stage_path = stage, stage_dir(self.run_dir, stage)
        acc.free_memory()
        # the trainer forms each step's window of micro-batches itself (across epoch ends): Accelerate syncs every
        # G-th micro-batch, never early at the end of a dataloader (its GradientState is process-wide: set both)
        acc.gradient_state.plugin_kwargs.update(num_steps=t.gradient_accumulation_steps, sync_with_dataloader=False)
        if acc.is_main_process:
            prepare_data(stage.data)
            self.stage_path.mkdir(parents=True, exist_ok=True)
            for stale in remove_stale(self.stage_path):
                logger.info("removed %s (left by an interrupted save)", stale)
        acc.wait_for_everyone()
        set_seed(cfg.seed + stage.index)
        source = resume_from or init_from
        tokenizer = AutoTokenizer.from_pretrained(source / "tokenizer") if source is not None else None
        model, self.tokenizer = build_model(cfg.model, self.registries, tokenizer=tokenizer)
        if init_from is not None and resume_from is None:
            load_weights(model, init_from)
            load_adapters(model, init_from, merge=True)
        applied = apply_policy(model, t.policy, self._policy_where(stage))
        if resume_from is not None and not self._accelerate_saves_model:
            load_plain_state_dict(model, load_file(str(resume_from / WEIGHTS_NAME)), str(resume_from))
            load_adapter_weights(model, resume_from)
        self.trainable = applied.counts
        self._build_data(stage, model)
        self.feature_cache = None
        if t.feature_cache is not None:
            self.feature_cache = EncoderFeatureCache(t.feature_cache, model.vision_encoder, acc.process_index).install()
        optimizer = build_optimizer(model, t, applied.lr_scale, applied.decays)
        if self.stream is None:
            self.model, self.optimizer, self.loader = acc.prepare(model, optimizer, self.loader)
        else:  # a streamed loader is sharded over processes by mmfw.data.stream, not by Accelerate
            self.model, self.optimizer = acc.prepare(model, optimizer)
        per_epoch = max(1, len(self.loader))
        self.total_steps = t.max_steps or max(1, math.ceil(t.epochs * per_epoch / t.gradient_accumulation_steps))
        self.scheduler = acc.prepare(build_scheduler(self.optimizer.optimizer, t, self.total_steps))
        self.global_step, self.epoch, self.batches_in_epoch, self.bad_steps, self.tokens_seen = 0, 0, 0, 0, 0
        if resume_from is not None:
            acc.load_state(str(resume_from / STATE_DIR))
            state = read_trainer_state(resume_from)
            self.global_step, self.epoch = state["global_step"], state["epoch"]
            self.batches_in_epoch, self.bad_steps = state["batches_in_epoch"], state.get("bad_steps", 0)
            self.tokens_seen = state.get("tokens_seen", 0)
            if self.stream is not None:
                self.stream.load_position(resume_from, acc.process_index)
            self.total_steps_done += self.global_step
            logger.info("resumed stage %r from %s (step %d, epoch %d, batch %d)", stage.name, resume_from,
                        self.global_step, self.epoch, self.batches_in_epoch)
        logger.info("stage %r: %d steps (%d examples, batch %d x accumulation %d x %d process(es)%s); trainable %s",
                    stage.name, self.total_steps, len(self.train_set), t.batch_size, t.gradient_accumulation_steps,
                    acc.num_processes, ", packed" if t.packing else "", self.trainable)

    def _build_data(self, stage: ResolvedStage, model: Any) -> None:
        d, t, acc = stage.data, stage.training, self.accelerator
        if not d.train:
            raise ConfigError([f"{'data' if stage.implicit else f'stages[{stage.index}].data'}.train: no training "
                               "data configured"])
        make = lambda specs, name: build_dataset(specs, d, self.tokenizer, model.image_strategy,  # noqa: E731
                                                 image_token=self.cfg.model.fusion.image_token, name=name,
                                                 image_markers=self.cfg.model.fusion.image_markers)
        self.stream: StreamLoader | None = None  # streamed sources (hf, webdataset): mmfw.data.stream
        self.train_set = (build_training_stream(d, self.tokenizer, model.image_strategy, self.cfg.model.fusion, t, acc,
                                                self.cfg.seed + 1000 * stage.index) if d.train[0].streamed
                          else make(d.train, "data.train"))
        if d.augment is not None:  # training images only; the eval set is never augmented
            self.train_set.augment = ImageAugmenter(d.augment, self.cfg.seed + 1000 * stage.index)
        self.eval_set = make(d.eval, "data.eval") if d.eval else None
        if self.eval_set is not None and d.eval_max_samples and len(self.eval_set) > d.eval_max_samples:
            self.eval_set = Subset(self.eval_set, range(d.eval_max_samples))
        if self.eval_set is not None:  # robust: never an eval over 0 samples
            require_usable(self.eval_set, "data.eval")
        self.report = DataReport.for_dataset(self.train_set, d.max_skip_ratio if d.on_error == "skip" else None,
                                             name="data.train")
        self.collator = VLMCollator(self.tokenizer.pad_token_id, padding_side="right")
        seed = self.cfg.seed + 1000 * stage.index
        if d.train[0].streamed:  # the one branch point: a streamed loader shards, batches and resumes itself
            collate = PackedCollator(self.tokenizer.pad_token_id) if t.packing else self.collator
            self.stream = self.loader = self.batch_sampler = self.train_set.loader(_WithIds(collate))
            return
        lengths = None
        if t.group_by_length or t.packing or t.group_by_modality:
            cache = self.stage_path / ".cache"
            if acc.is_main_process:
                lengths = sample_lengths(self.train_set, cache)
            acc.wait_for_everyone()
            if lengths is None:
                lengths = sample_lengths(self.train_set, cache)
        dataset: Any = self.train_set
        collate: Any = self.collator
        if t.packing:
            capacity = t.pack_length or d.max_length
            self.batch_sampler: Any = PackedBatchSampler(lengths, capacity, t.batch_size, seed)
            dataset, collate = RowTaggedDataset(self.train_set), PackedCollator(self.tokenizer.pad_token_id)
        elif t.group_by_modality:
            self.batch_sampler = ModalityGroupedBatchSampler(lengths, sample_has_image(self.train_set), t.batch_size,
                                                             seed)
        elif t.group_by_length:
            self.batch_sampler = LengthGroupedBatchSampler(lengths, t.batch_size, seed)
        else:
            self.batch_sampler = ShuffledBatchSampler(len(self.train_set), t.batch_size, seed)
        self.loader = DataLoader(dataset, batch_sampler=self.batch_sampler, collate_fn=_WithIds(collate),
                                 num_workers=t.num_workers, generator=torch.Generator().manual_seed(seed))

    # -- the loop ------------------------------------------------------------------------------------------------
    def _micro_batches(self) -> Iterator[dict[str, Any]]:
        """Micro-batches forever, epoch after epoch, starting at the saved position."""
        acc = self.accelerator
        while True:
            self.batch_sampler.set_epoch(self.epoch)
            self.train_set.set_epoch(self.epoch)
            self.loader.set_epoch(self.epoch)
            skip = self.batches_in_epoch
            loader = acc.skip_first_batches(self.loader, skip) if skip and self.stream is None else self.loader
            for batch in loader:
                self.batches_in_epoch += 1
                self.report.observe(batch)
                yield batch
            metrics = self.report.end_epoch()
            self.log({"epoch": self.epoch, **metrics})
            self.epoch += 1
            self.batches_in_epoch = 0

    def _inputs(self, batch: dict[str, Any]) -> tuple[dict[str, Any], torch.Tensor]:
        """Model inputs (no labels: the loss is computed here) and the labels, image positions masked."""
        if batch["input_ids"].shape[0] == 0:  # every sample of the micro-batch was skipped: one ignored token
            device = self.accelerator.device
            ids = torch.full((1, 1), int(self.tokenizer.pad_token_id), device=device)
            return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}, torch.full_like(ids, IGNORE_INDEX)
        inputs = {k: batch[k] for k in _MODEL_KEYS if batch.get(k) is not None}
        image_id = self.accelerator.unwrap_model(self.model).image_token_id
        labels = batch["labels"].masked_fill(batch["input_ids"] == image_id, IGNORE_INDEX)
        return inputs, labels

    def _run_stage(self, stage: ResolvedStage, init_from: Path | None, resume_from: Path | None,
                   out_dir: Path) -> dict[str, float]:
        self._setup_stage(stage, init_from, resume_from)
        acc, t = self.accelerator, stage.training
        if self.hooks is not None:
            self.hooks.mmfw_train_start(config=self.cfg, run_dir=self.run_dir)
        bar = tqdm(total=self.total_steps, initial=self.global_step, desc=stage.name, dynamic_ncols=True,
                   disable=not (self.progress and acc.is_local_main_process))
        self.model.train()
        stream = self._micro_batches()
        G = t.gradient_accumulation_steps
        window = {"loss": 0.0, "tokens": 0, "real": 0, "computed": 0, "steps": 0, "start": time.perf_counter()}
        last: dict[str, float] = {}
        try:
            while self.global_step < self.total_steps:
                micro = [next(stream) for _ in range(G)]
                prepared = [self._inputs(b) for b in micro]
                local_tokens = sum(supervised_tokens(lab) for _, lab in prepared)
                step_tokens = int(acc.reduce(torch.tensor(local_tokens, device=acc.device), "sum"))
                scale = G * acc.num_processes / max(step_tokens, 1)
                loss_sum = torch.zeros((), device=acc.device)
                for (inputs, labels), batch in zip(prepared, micro, strict=True):
                    with acc.accumulate(self.model):
                        positions = logit_positions(labels)
                        try:
                            logits = self.model(**inputs, use_cache=False, logits_to_keep=positions).logits
                        except FusionError as err:  # name the record, not only the batch row
                            rows = batch["input_ids"].shape[0]
                            raise err.naming_records(batch["ids"] if len(batch["ids"]) == rows else []) from None
                        ce = token_loss_sum(logits, labels, positions)
                        acc.backward(ce * scale)
                        loss_sum += ce.detach()
                grad_norm = None
                if t.max_grad_norm is not None:
                    grad_norm = acc.clip_grad_norm_(self.model.parameters(), t.max_grad_norm)
                bad = ~torch.isfinite(loss_sum)
                if grad_norm is not None and t.mixed_precision != "fp16":
                    bad = bad | ~torch.isfinite(torch.as_tensor(grad_norm, device=acc.device))
                totals = acc.reduce(torch.stack([loss_sum.float(), bad.float()]), "sum")
                step_loss, any_bad = float(totals[0]) / max(step_tokens, 1), bool(totals[1] > 0)
                self.global_step += 1
                self.total_steps_done += 1
                if any_bad:
                    self.optimizer.zero_grad(set_to_none=True)
                    self._bad_step(step_loss, micro)
                else:
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                self.scheduler.step()
                bar.update(1)
                n_real = sum(real_tokens(b) for b in micro)
                self.tokens_seen += n_real
                if not any_bad:
                    window["loss"] += step_loss
                    window["steps"] += 1
                window["real"] += n_real
                window["computed"] += sum(int(b["input_ids"].numel()) for b in micro)
                if self.global_step % t.log_every == 0 or self.global_step == self.total_steps:
                    last = self._log_window(window, bar)
                if t.eval_every and self.global_step % t.eval_every == 0 and self.global_step < self.total_steps:
                    self.evaluate(generate=True)
                if t.save_every and self.global_step % t.save_every == 0 and self.global_step < self.total_steps:
                    self.save_checkpoint()
                if self.stop is not None and self._stop_requested():
                    self._interrupt()
        finally:
            bar.close()
            if self.feature_cache is not None:
                logger.info("encoder feature cache: %d hits, %d misses", self.feature_cache.hits,
                            self.feature_cache.misses)
                self.feature_cache.close()
        final = {f"train/{k}": v for k, v in last.items()}
        final.update(self.evaluate(generate=True))
        final["run/steps"] = self.global_step
        self._finish_stage(stage, out_dir, final)
        return final

    def _log_window(self, window: dict[str, Any], bar: Any) -> dict[str, float]:
        acc = self.accelerator
        elapsed = time.perf_counter() - window["start"]
        counts = acc.reduce(torch.tensor([window["real"], window["computed"]], device=acc.device), "sum")
        real, computed = int(counts[0]), int(counts[1])
        last = {"lr": self.scheduler.get_last_lr()[0], "tokens_per_s": real / max(elapsed, 1e-9),
                "token_efficiency": real / max(computed, 1)}
        if window["steps"]:  # a window of skipped (non-finite) steps has no loss to report
            last = {"loss": window["loss"] / window["steps"], **last}
            bar.set_postfix(loss=f"{last['loss']:.4f}", tok_s=f"{last['tokens_per_s']:.0f}")
        self.log({f"train/{k}": v for k, v in last.items()})
        window.update(loss=0.0, real=0, computed=0, steps=0, start=time.perf_counter())
        return last

    def _bad_step(self, loss: float, micro: list[dict[str, Any]]) -> None:
        """A non-finite loss or gradient norm: skip the update (counted), or stop when the budget is spent."""
        self.bad_steps += 1
        stage, t = self.stage, self.stage.training
        step = self.global_step
        ids = [i for b in micro for i in (b.get("ids") or [])]
        self.log({"train/bad_steps": self.bad_steps, "train/bad_loss": loss})
        if self.bad_steps <= t.max_bad_steps:
            logger.warning("step %d of stage %r: non-finite loss or gradient (%s); update skipped (%d of %d allowed)",
                           step, stage.name, loss, self.bad_steps, t.max_bad_steps)
            return
        ckpt = latest_checkpoint(self.stage_path)
        where = f"the last good checkpoint is {ckpt}" if ckpt else "no checkpoint was written yet"
        raise NonFiniteLossError(
            f"non-finite loss ({loss}) at step {step} of stage {stage.name!r}; training stopped without applying "
            f"the update ({where}{'; samples ' + str(ids[:8]) if ids else ''}). Lower the learning rate, keep "
            f"max_grad_norm set, or allow skipping such steps with training.max_bad_steps")

    # -- evaluation, logging, saving -----------------------------------------------------------------------------
    def evaluate(self, generate: bool) -> dict[str, float]:
        """Eval loss (and, with ``generate``, exact-match accuracy) on the main process."""
        acc = self.accelerator
        metrics: dict[str, float] = {}
        if self.eval_set is not None and acc.is_main_process:
            model = acc.unwrap_model(self.model)
            model.eval()
            t = self.stage.training
            bs = t.eval_batch_size or t.batch_size
            with acc.autocast():
                metrics["eval/loss"] = evaluate_loss(model, self.eval_set, self.collator, bs, acc.device)
                if generate:
                    predictions: list[dict[str, Any]] = []
                    acc_metrics = evaluate_accuracy(model, self.tokenizer, self.eval_set, bs, t.max_new_tokens,
                                                    acc.device, predictions)
                    metrics.update({f"eval/{k}": v for k, v in acc_metrics.items()})
                    write_predictions(self.run_dir / PREDICTIONS_FILE, predictions, step=self.global_step,
                                      **({} if self.stage.implicit else {"stage": self.stage.name}))
            model.train()
            self.log(metrics)
            logger.info("stage %r step %d: %s", self.stage.name, self.global_step,
                        {k: round(v, 4) for k, v in metrics.items()})
            if self.hooks is not None:
                self.hooks.mmfw_evaluation_end(metrics=metrics, step=self.global_step, run_dir=self.run_dir)
        acc.wait_for_everyone()
        return metrics

    def log(self, values: dict[str, Any]) -> None:
        """Append to ``metrics.jsonl`` (main process) and send numbers to the trackers."""
        acc = self.accelerator
        if not acc.is_main_process:
            return
        record = {"step": self.global_step, **({"stage": self.stage.name} if not self.stage.implicit else {}),
                  **values}
        with open(self.run_dir / METRICS_LOG, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if acc.log_with:
            numbers = {k: v for k, v in values.items() if isinstance(v, int | float)}
            if not self.stage.implicit:
                numbers = {f"{self.stage.name}/{k}": v for k, v in numbers.items()}
            acc.log(numbers, step=self.total_steps_done)

    def _model_state(self) -> dict[str, torch.Tensor] | None:
        """Full plain-named weights gathered by Accelerate when it shards the model (FSDP/DeepSpeed), else None."""
        if not self._accelerate_saves_model:
            return None
        from mmfw.training.lora import lora_components, plain_key

        state = self.accelerator.get_state_dict(self.model)
        wrapped = list(lora_components(self.accelerator.unwrap_model(self.model)))
        return {pk: v for k, v in state.items() if (pk := plain_key(k, wrapped)) is not None}

    def trainer_state(self) -> dict[str, Any]:
        return {"stage": self.stage.name, "global_step": self.global_step, "epoch": self.epoch,
                "batches_in_epoch": self.batches_in_epoch, "bad_steps": self.bad_steps,
                "tokens_seen": self.tokens_seen, "total_steps": self.total_steps}

    def save_checkpoint(self) -> Path | None:
        """Write ``checkpoints/step-N`` atomically (all processes take part; the main one writes the files)."""
        acc = self.accelerator
        if acc.is_main_process:
            staging_dir(self.stage_path, self.global_step)
        acc.wait_for_everyone()
        tmp = staging_path(self.stage_path, self.global_step)
        state = self._model_state()
        final = None
        try:
            acc.save_state(str(tmp / STATE_DIR))
            if self.stream is not None:  # every process writes its own stream position
                self.stream.save_position(tmp, acc.process_index)
                acc.wait_for_everyone()
            if acc.is_main_process:
                write_model_dir(acc.unwrap_model(self.model), self.tokenizer, self.cfg, tmp, state)
                final = commit_checkpoint(tmp, self.global_step, self.trainer_state(), self.stage.training.keep_last)
        except (OSError, RuntimeError) as e:  # robust: a full disk leaves the previous checkpoint as it was
            if not is_write_failure(e):
                raise
            raise failed_write_error(e, tmp, self.stage_path, f"checkpoint step-{self.global_step}") from e
        acc.wait_for_everyone()
        return final

    def _stop_requested(self) -> bool:
        """Whether any process received SIGTERM / SIGINT (all processes agree, so that they stop together)."""
        flag = torch.tensor(float(self.stop.requested), device=self.accelerator.device)
        return bool(self.accelerator.reduce(flag, "sum") > 0) if self.accelerator.num_processes > 1 else bool(flag)

    def _interrupt(self) -> None:
        """Write a checkpoint of the finished step and stop, naming it and the command that continues."""
        ckpt = latest_checkpoint(self.stage_path)
        if ckpt is None or read_trainer_state(ckpt).get("global_step") != self.global_step:
            ckpt = self.save_checkpoint() or staging_path(self.stage_path, self.global_step).parent / \
                f"step-{self.global_step}"
        raise TrainingInterrupted(
            f"stopped by {self.stop.signal or 'a signal'} after step {self.global_step} of {self.total_steps} of "
            f"stage {self.stage.name!r}; checkpoint {ckpt} written. `mmfw train {self.run_dir} --resume` continues "
            "from it")

    def _finish_stage(self, stage: ResolvedStage, out_dir: Path, metrics: dict[str, float]) -> None:
        acc = self.accelerator
        state = self._model_state()
        if acc.is_main_process:
            tmp = out_dir.parent / f".{out_dir.name}.tmp"
            if tmp.exists():
                shutil.rmtree(tmp)
            write_model_dir(acc.unwrap_model(self.model), self.tokenizer, self.cfg, tmp, state)
            record = {"stage": stage.name, "index": stage.index, "steps": self.global_step, "metrics": metrics,
                      "trainable_parameters": self.trainable}
            (tmp / STAGE_DONE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            publish_dir(tmp, out_dir)
            if not stage.implicit:
                (self.stage_path / FINAL_METRICS).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
            logger.info("stage %r finished: %s", stage.name, out_dir)
            if self.hooks is not None:
                self.hooks.mmfw_train_end(metrics=metrics, run_dir=self.run_dir)
        acc.wait_for_everyone()


__all__ = ["Trainer", "checkpoint_dirs", "make_accelerator", "stage_dir", "stage_output_dir"]
