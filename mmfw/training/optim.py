"""Optimizer (AdamW, per-module learning-rate multipliers) and learning-rate schedule."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LambdaLR

from mmfw.config.training import TrainingConfig
from mmfw.errors import ConfigError


def _matrices_decay(p: torch.nn.Parameter) -> bool:
    return p.ndim >= 2


def parameter_groups(model: torch.nn.Module, weight_decay: float, learning_rate: float,
                     lr_scale: Callable[[torch.nn.Parameter], float] = lambda p: 1.0,
                     decays: Callable[[torch.nn.Parameter], bool] = _matrices_decay) -> list[dict]:
    """Trainable parameters grouped by learning-rate multiplier and by decay (by default matrices decay; biases,
    norms and other 1-D parameters do not). Groups are ordered deterministically (by first parameter)."""
    groups: dict[tuple[float, bool], dict] = {}
    for _, p in model.named_parameters():
        if not p.requires_grad:
            continue
        scale, decay = lr_scale(p), decays(p)
        group = groups.setdefault((scale, decay), {"params": [], "weight_decay": weight_decay if decay else 0.0,
                                                   "lr": learning_rate * scale, "lr_scale": scale})
        group["params"].append(p)
    return list(groups.values())


def build_optimizer(model: torch.nn.Module, cfg: TrainingConfig,
                    lr_scale: Callable[[torch.nn.Parameter], float] = lambda p: 1.0,
                    decays: Callable[[torch.nn.Parameter], bool] = _matrices_decay) -> torch.optim.Optimizer:
    groups = parameter_groups(model, cfg.weight_decay, cfg.learning_rate, lr_scale, decays)
    if not groups:
        raise ConfigError(["training.policy: nothing to train: every parameter is frozen under the training policy"])
    return torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=cfg.betas, fused=cfg.fused_optimizer or None)


def lr_lambda(step: int, total_steps: int, warmup_steps: int, kind: str, min_ratio: float) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (linear warmup, then the decay ``kind``)."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if kind == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    decay = 0.5 * (1.0 + math.cos(math.pi * progress)) if kind == "cosine" else 1.0 - progress
    return min_ratio + (1.0 - min_ratio) * decay


class _Schedule:
    """Picklable multiplier function (a lambda would make the scheduler's state unsaveable)."""

    def __init__(self, total: int, warmup: int, kind: str, min_ratio: float) -> None:
        self.total, self.warmup, self.kind, self.min_ratio = total, warmup, kind, min_ratio

    def __call__(self, step: int) -> float:
        return lr_lambda(step, self.total, self.warmup, self.kind, self.min_ratio)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainingConfig, total_steps: int) -> LambdaLR:
    warmup = int(round(cfg.warmup_ratio * total_steps))
    schedule = _Schedule(total_steps, warmup, cfg.lr_scheduler, cfg.min_lr_ratio)
    return LambdaLR(optimizer, [schedule] * len(optimizer.param_groups))
