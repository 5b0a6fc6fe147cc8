"""Optimizer and learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR

from mmfw.config.experiment import TrainingConfig


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Trainable parameters split into decayed (matrices) and non-decayed (biases, norms, embeddings rows 1-D)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(model: torch.nn.Module, cfg: TrainingConfig) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg.weight_decay)
    if not groups:
        raise ValueError("nothing to train: every parameter is frozen under training.policy")
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=cfg.betas)


def lr_lambda(step: int, total_steps: int, warmup_steps: int, kind: str, min_ratio: float) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (linear warmup, then the decay ``kind``)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if kind == "cosine" else 1.0 - progress
    return min_ratio + (1.0 - min_ratio) * decay


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainingConfig, total_steps: int) -> LambdaLR:
    warmup = int(round(cfg.warmup_ratio * total_steps))
    return LambdaLR(optimizer, lambda s: lr_lambda(s, total_steps, warmup, cfg.lr_scheduler, cfg.min_lr_ratio))
