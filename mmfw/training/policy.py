"""Per-module training policy: which parts of the VLM are trained, how (full, LoRA, last blocks), at what LR scale.

:func:`apply_policy` changes a model in place at the start of a stage (``requires_grad``, peft wrapping, gradient
checkpointing) and returns each trainable parameter's learning-rate multiplier. :func:`trainable_parameter_counts`
computes what a policy would train without touching the model (for ``mmfw inspect`` and dry runs).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmfw.config.training import COMPONENTS, FrozenPolicy, FullPolicy, LoraPolicy, PolicyConfig
from mmfw.errors import ConfigError
from mmfw.training.lora import is_lora_parameter, lora_parameter_count, wrap_lora, wrapped_model
from mmfw.training.new_token_rows import embedding_weights, new_token_row_count, train_new_token_rows

logger = logging.getLogger(__name__)


@dataclass
class AppliedPolicy:
    """What :func:`apply_policy` did: trainable parameter counts per component, and LR multipliers."""

    counts: dict[str, int]
    lr_scales: dict[int, float] = field(default_factory=dict)
    """``id(parameter)`` -> learning-rate multiplier, for every trainable parameter."""
    no_decay: set[int] = field(default_factory=set)
    """``id(parameter)`` of trainable parameters that must get no weight decay (row-masked embeddings)."""

    def lr_scale(self, p: nn.Parameter) -> float:
        return self.lr_scales.get(id(p), 1.0)

    def decays(self, p: nn.Parameter) -> bool:
        """Whether ``p`` gets weight decay: matrices do, except those in ``no_decay``; 1-D parameters never."""
        return p.ndim >= 2 and id(p) not in self.no_decay


def _blocks(module: nn.Module, name: str, n: int, where: str) -> list[nn.Module]:
    groups = module.layer_groups()
    if not groups:
        raise ConfigError([f"{where}.{name}.unfreeze_last_blocks: {type(module).__name__} exposes no blocks "
                           "(layer_groups() is empty)"])
    if n > len(groups):
        raise ConfigError([f"{where}.{name}.unfreeze_last_blocks: {n} > the {len(groups)} blocks of "
                           f"{type(module).__name__}"])
    return list(groups)[len(groups) - n:]


def _submodule(model: nn.Module, path: str, where: str) -> nn.Module:
    try:
        return model.get_submodule(path)
    except AttributeError:
        parent, _, _ = path.rpartition(".")
        try:
            children = [n for n, _ in (model.get_submodule(parent) if parent else model).named_children()]
        except AttributeError:
            children = [n for n, _ in model.named_children()]
        raise ConfigError([f"{where}.modules.{path}: no such sub-module; children of {parent or 'the model'!r}: "
                           f"{', '.join(children)}"]) from None


def enable_gradient_checkpointing(component: nn.Module, name: str, where: str) -> None:
    """Recompute activations in the backward pass: transformers' own switch, else per block of ``layer_groups()``."""
    if component.enable_gradient_checkpointing():
        return
    groups = component.layer_groups()
    if not groups:
        raise ConfigError([f"{where}.{name}.gradient_checkpointing: {type(component).__name__} supports no "
                           "gradient checkpointing (no transformers model, no layer_groups())"])
    for block in groups:
        if getattr(block, "_mmfw_checkpointed", False):
            continue
        original = block.forward

        @functools.wraps(original)
        def forward(*args, _original=original, _block=block, **kwargs):  # type: ignore[no-untyped-def]
            if _block.training and torch.is_grad_enabled():
                return checkpoint(_original, *args, use_reentrant=False, **kwargs)
            return _original(*args, **kwargs)

        block.forward = forward
        block._mmfw_checkpointed = True


def _policy_params(module: nn.Module, pol: FrozenPolicy | FullPolicy, label: str,
                   where: str) -> list[nn.Parameter]:
    """The parameters of ``module`` a frozen/full policy trains (all, none, or those of the last N blocks)."""
    if isinstance(pol, FullPolicy):
        return list(module.parameters())
    if pol.unfreeze_last_blocks:
        return [p for block in _blocks(module, label, pol.unfreeze_last_blocks, where) for p in block.parameters()]
    return []


def apply_policy(model: nn.Module, policy: PolicyConfig, where: str = "training.policy") -> AppliedPolicy:
    """Apply ``policy`` to the VLM ``model`` in place; config problems raise :class:`ConfigError` naming the key."""
    components = policy.components()
    overrides = [(path, pol, _submodule(model, path, where)) for path, pol in policy.modules.items()]
    for name, pol in components.items():
        if pol.gradient_checkpointing:
            enable_gradient_checkpointing(getattr(model, name), name, where)
    for name, pol in components.items():
        if isinstance(pol, LoraPolicy):
            wrap_lora(getattr(model, name), name, pol, where)
    scales: dict[int, float] = {}
    for name, pol in components.items():
        module = getattr(model, name)
        module.requires_grad_(False)
        if isinstance(pol, LoraPolicy):
            train = [p for n, p in module.named_parameters() if is_lora_parameter(n)]
        else:
            train = _policy_params(module, pol, name, where)
        for p in train:
            p.requires_grad_(True)
            scales[id(p)] = pol.lr_scale
    for path, pol, sub in overrides:
        for p in sub.parameters():
            p.requires_grad_(False)
            scales.pop(id(p), None)
        for p in _policy_params(sub, pol, f"modules.{path}", where):
            p.requires_grad_(True)
            scales[id(p)] = pol.lr_scale
    new_rows = train_new_token_rows(model, where) if policy.new_token_embeddings else None
    if new_rows is not None:
        scales.update({id(w): policy.llm.lr_scale for w in new_rows.weights})
    counts = {name: sum(p.numel() for p in getattr(model, name).parameters() if p.requires_grad)
              for name in COMPONENTS}
    counts["total"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if new_rows is not None:  # only the new rows of the embedding weights train
        frozen_rows = sum(w.numel() for w in new_rows.weights) - new_rows.trainable_numel
        counts["llm"] -= frozen_rows
        counts["total"] -= frozen_rows
    logger.info("trainable parameters: %s", counts)
    return AppliedPolicy(counts, scales, no_decay={id(w) for w in new_rows.weights} if new_rows else set())


def trainable_parameter_counts(model: nn.Module, policy: PolicyConfig,
                               where: str = "training.policy") -> dict[str, int]:
    """Trainable parameters per component (and ``total``) that ``policy`` would give ``model``, computed without
    changing it (the model may live on the meta device). ``model`` is a VLM without adapters (as built by
    :func:`mmfw.model.builder.build_model`). Raises :class:`ConfigError` for policy keys that do not fit the model
    (unknown LoRA targets or sub-modules), located at ``where`` (e.g. ``stages[1].policy``)."""
    from mmfw.training.lora import check_lora_targets

    trainable: dict[int, nn.Parameter] = {}
    owner: dict[int, str] = {}
    lora: dict[str, int] = {}
    for name, pol in policy.components().items():
        module = getattr(model, name)
        for p in module.parameters():
            owner.setdefault(id(p), name)
        if isinstance(pol, LoraPolicy):
            inner = wrapped_model(module, name, where)
            check_lora_targets(inner, pol, f"{where}.{name}")
            lora[name] = lora_parameter_count(inner, pol)
        else:
            trainable.update({id(p): p for p in _policy_params(module, pol, name, where)})
    for path, pol in policy.modules.items():
        sub = _submodule(model, path, where)
        for p in sub.parameters():
            trainable.pop(id(p), None)
        trainable.update({id(p): p for p in _policy_params(sub, pol, f"modules.{path}", where)})
    if policy.new_token_embeddings:
        for w in embedding_weights(model):
            trainable.pop(id(w), None)
    counts = dict.fromkeys(COMPONENTS, 0)
    for pid, p in trainable.items():
        if pid in owner:
            counts[owner[pid]] += p.numel()
    if policy.new_token_embeddings:
        counts["llm"] += new_token_row_count(model)
    for name, n in lora.items():
        counts[name] += n
    counts["total"] = sum(counts.values())
    return counts


def stage_policy_counts(cfg: Any, registries: Any) -> dict[str, dict[str, int]]:
    """Trainable parameters of every stage of an experiment (``{stage name: counts}``), from a model built on the
    meta device (no memory, no weights). Raises :class:`ConfigError` naming the stage's policy key on problems."""
    from mmfw.model.builder import build_model

    with torch.device("meta"):
        model, _ = build_model(cfg.model, registries)
    return {stage.name: trainable_parameter_counts(
                model, stage.training.policy, "training.policy" if stage.implicit else f"stages[{stage.index}].policy")
            for stage in cfg.stage_plan()}


def check_stage_policies(cfg: Any, registries: Any) -> None:
    """Check every stage's policy against the model (built on the meta device) before anything trains, so a LoRA
    target that matches nothing in stage 2 fails now, not after stage 1; logs what each stage trains.

    Skipped while a file the model reads (e.g. the tokenizer of ``data.build_tokenizer``) is one the run generates
    and it is not there yet: the stage checks it when it starts, after its data are prepared.
    """
    from mmfw.config.validate import ConfigContext

    generated = ConfigContext(cfg, registries)
    pending = [src for c in cfg.model.components().values() for src in c.sources().values()
               if generated.is_generated(src) and not Path(src).exists()]
    if pending:
        logger.debug("policy pre-check skipped until %s are generated", pending)
        return
    try:
        counts = stage_policy_counts(cfg, registries)
    except ConfigError:
        raise
    except Exception as e:  # a component that cannot be built on the meta device: checked at stage start
        logger.debug("policy pre-check skipped (%s: %s)", type(e).__name__, e)
        return
    for name, c in counts.items():
        logger.info("stage %r trains %s parameters (%s)", name, f"{c['total']:,}",
                    ", ".join(f"{k} {v:,}" for k, v in c.items() if k != "total" and v))
