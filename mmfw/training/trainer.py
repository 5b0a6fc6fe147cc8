"""Training with Hugging Face Accelerate: the same loop on a laptop CPU, one GPU or many.

AdamW, warmup + cosine schedule, gradient accumulation, mixed precision, gradient clipping, a progress bar with loss
and tokens/s, periodic evaluation, atomic checkpoints, ``metrics.jsonl`` (log) and ``metrics.json`` (final metrics).
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from torch.utils.data import DataLoader, Subset
from tqdm.auto import tqdm

from mmfw.components import Registries
from mmfw.config import ExperimentConfig, save_config
from mmfw.config.loader import RESOLVED_CONFIG_NAME
from mmfw.data.collator import VLMCollator
from mmfw.data.dataset import LlavaDataset
from mmfw.model.builder import build_model
from mmfw.model.io import FINAL_MODEL_DIR, save_model_dir
from mmfw.training.checkpoint import commit_checkpoint, staging_dir, staging_path
from mmfw.training.data_prep import prepare_data
from mmfw.training.evaluate import evaluate_accuracy, evaluate_loss, model_inputs
from mmfw.training.optim import build_optimizer, build_scheduler
from mmfw.training.policy import apply_policy

logger = logging.getLogger(__name__)

METRICS_LOG = "metrics.jsonl"
FINAL_METRICS = "metrics.json"


class Trainer:
    """One training run of an :class:`ExperimentConfig`; components are resolved through ``registries``."""

    def __init__(self, cfg: ExperimentConfig, registries: Registries, plugin_manager: Any | None = None,
                 accelerator: Accelerator | None = None, progress: bool = True) -> None:
        self.cfg = cfg
        self.registries = registries
        self.hooks = plugin_manager.hook if plugin_manager is not None else None
        t = cfg.training
        self.accelerator = accelerator or Accelerator(gradient_accumulation_steps=t.gradient_accumulation_steps,
                                                      mixed_precision=t.mixed_precision)
        self.run_dir = cfg.run_dir
        self.progress = progress
        self.global_step = 0

    # -- setup ---------------------------------------------------------------------------------------------------
    def setup(self) -> None:
        cfg, acc = self.cfg, self.accelerator
        if acc.is_main_process:
            prepare_data(cfg.data)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(cfg, self.run_dir / RESOLVED_CONFIG_NAME)
            (self.run_dir / METRICS_LOG).write_text("", encoding="utf-8")
        acc.wait_for_everyone()
        set_seed(cfg.seed)
        self.model, self.tokenizer = build_model(cfg.model, self.registries)
        self.trainable = apply_policy(self.model, cfg.training.policy)
        d = cfg.data
        make = lambda specs: LlavaDataset(specs, self.tokenizer, self.model.image_strategy,  # noqa: E731
                                          image_token=cfg.model.fusion.image_token, max_length=d.max_length,
                                          system_prompt=d.system_prompt)
        if not d.train:
            raise ValueError("data.train: no training data configured")
        self.train_set = make(d.train)
        self.eval_set = make(d.eval) if d.eval else None
        if self.eval_set is not None and d.eval_max_samples and len(self.eval_set) > d.eval_max_samples:
            self.eval_set = Subset(self.eval_set, range(d.eval_max_samples))
        self.collator = VLMCollator(self.tokenizer.pad_token_id, padding_side="right")
        t = cfg.training
        generator = torch.Generator().manual_seed(cfg.seed)
        loader = DataLoader(self.train_set, batch_size=t.batch_size, shuffle=True, collate_fn=self.collator,
                            num_workers=t.num_workers, generator=generator, drop_last=False)
        updates_per_epoch = math.ceil(len(loader) / acc.num_processes / t.gradient_accumulation_steps)
        self.total_steps = t.max_steps or max(1, math.ceil(t.epochs * updates_per_epoch))
        optimizer = build_optimizer(self.model, t)
        scheduler = build_scheduler(optimizer, t, self.total_steps)
        self.model, self.optimizer, self.loader, self.scheduler = acc.prepare(self.model, optimizer, loader,
                                                                              scheduler)
        logger.info("training %d steps (%d examples, batch %d x accumulation %d x %d process(es))", self.total_steps,
                    len(self.train_set), t.batch_size, t.gradient_accumulation_steps, acc.num_processes)

    # -- loop ----------------------------------------------------------------------------------------------------
    def train(self) -> dict[str, float]:
        self.setup()
        acc, t = self.accelerator, self.cfg.training
        if self.hooks is not None:
            self.hooks.mmfw_train_start(config=self.cfg, run_dir=self.run_dir)
        bar = tqdm(total=self.total_steps, disable=not (self.progress and acc.is_local_main_process), desc="train",
                   dynamic_ncols=True)
        self.model.train()
        window_loss, window_batches, window_tokens, window_start = 0.0, 0, 0, time.perf_counter()
        last: dict[str, float] = {}
        while self.global_step < self.total_steps:
            for batch in self.loader:
                with acc.accumulate(self.model):
                    loss = self.model(**model_inputs(batch)).loss
                    acc.backward(loss)
                    if acc.sync_gradients and t.max_grad_norm is not None:
                        acc.clip_grad_norm_(self.model.parameters(), t.max_grad_norm)
                    self.optimizer.step()
                    self.scheduler.step()
                    self.optimizer.zero_grad(set_to_none=True)
                window_loss += float(loss.detach())
                window_batches += 1
                window_tokens += int(batch["attention_mask"].sum())
                if not acc.sync_gradients:
                    continue
                self.global_step += 1
                bar.update(1)
                if self.global_step % t.log_every == 0 or self.global_step == self.total_steps:
                    elapsed = time.perf_counter() - window_start
                    tokens = int(acc.gather(torch.tensor(window_tokens, device=acc.device)).sum())
                    last = {"loss": window_loss / window_batches, "lr": self.scheduler.get_last_lr()[0],
                            "tokens_per_s": tokens / max(elapsed, 1e-9)}
                    bar.set_postfix(loss=f"{last['loss']:.4f}", tok_s=f"{last['tokens_per_s']:.0f}")
                    self.log({"step": self.global_step, **{f"train/{k}": v for k, v in last.items()}})
                    window_loss, window_batches, window_tokens, window_start = 0.0, 0, 0, time.perf_counter()
                if t.eval_every and self.global_step % t.eval_every == 0 and self.global_step < self.total_steps:
                    self.evaluate(generate=False)
                if t.save_every and self.global_step % t.save_every == 0 and self.global_step < self.total_steps:
                    self.save_checkpoint()
                if self.global_step >= self.total_steps:
                    break
        bar.close()
        final = {f"train/{k}": v for k, v in last.items()}
        final.update(self.evaluate(generate=True))
        self.finish(final)
        return final

    # -- evaluation, logging, saving -----------------------------------------------------------------------------
    def evaluate(self, generate: bool) -> dict[str, float]:
        """Eval loss (and, with ``generate``, exact-match accuracy) on the main process."""
        acc = self.accelerator
        metrics: dict[str, float] = {}
        if self.eval_set is not None and acc.is_main_process:
            model = acc.unwrap_model(self.model)
            model.eval()
            bs = self.cfg.training.eval_batch_size or self.cfg.training.batch_size
            metrics["eval/loss"] = evaluate_loss(model, self.eval_set, self.collator, bs, acc.device)
            if generate:
                acc_metrics = evaluate_accuracy(model, self.tokenizer, self.eval_set, bs,
                                                self.cfg.training.max_new_tokens, acc.device)
                metrics.update({f"eval/{k}": v for k, v in acc_metrics.items()})
            model.train()
            self.log({"step": self.global_step, **metrics})
            logger.info("step %d: %s", self.global_step, {k: round(v, 4) for k, v in metrics.items()})
            if self.hooks is not None:
                self.hooks.mmfw_evaluation_end(metrics=metrics, step=self.global_step, run_dir=self.run_dir)
        acc.wait_for_everyone()
        return metrics

    def log(self, record: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            with open(self.run_dir / METRICS_LOG, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def save_checkpoint(self) -> Path | None:
        acc = self.accelerator
        if acc.is_main_process:
            staging_dir(self.run_dir, self.global_step)
        acc.wait_for_everyone()
        tmp = staging_path(self.run_dir, self.global_step)
        acc.save_state(str(tmp / "state"))
        final = None
        if acc.is_main_process:
            save_model_dir(acc.unwrap_model(self.model), self.tokenizer, self.cfg, tmp)
            final = commit_checkpoint(tmp, self.global_step, {"global_step": self.global_step},
                                      self.cfg.training.keep_last)
        acc.wait_for_everyone()
        return final

    def finish(self, metrics: dict[str, float]) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            save_model_dir(acc.unwrap_model(self.model), self.tokenizer, self.cfg, self.run_dir / FINAL_MODEL_DIR)
            nested: dict[str, dict[str, float]] = {}
            for key, value in metrics.items():
                group, _, name = key.partition("/")
                nested.setdefault(group, {})[name] = value
            nested["run"] = {"steps": self.global_step}
            (self.run_dir / FINAL_METRICS).write_text(json.dumps(nested, indent=2) + "\n", encoding="utf-8")
            if self.hooks is not None:
                self.hooks.mmfw_train_end(metrics=metrics, run_dir=self.run_dir)
        acc.wait_for_everyone()
