"""Per-module training policy: which parts of the VLM are trained, how (full, LoRA, last blocks), at what LR scale.

:func:`plan_policy` works out once which parameters a policy trains, with which learning-rate multiplier;
:func:`apply_policy` carries that plan out on a model at the start of a stage (``requires_grad``, peft wrapping,
gradient checkpointing) and :func:`trainable_parameter_counts` counts it without touching the model (for
``mmfw inspect``, dry runs and the trainer's pre-check).
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


@dataclass
class PolicyPlan:
    """What a policy trains in a model, worked out once (from the model without adapters, which may live on the
    meta device); :func:`apply_policy` carries it out and :meth:`counts` counts it, so the two cannot disagree."""

    params: dict[int, tuple[nn.Parameter, str, float]]
    """``id(parameter)`` -> (parameter, its component, LR multiplier) of every trainable parameter but adapters."""
    lora: dict[str, LoraPolicy]
    """Components that get LoRA adapters (only the adapters train; their LR multiplier is the policy's)."""
    new_token_rows: float | None
    """LR multiplier of the added tokens' embedding rows when they train (``new_token_embeddings``), else None."""

    def counts(self, model: nn.Module) -> dict[str, int]:
        """Trainable parameters per component, and ``total``."""
        counts = dict.fromkeys(COMPONENTS, 0)
        for p, owner, _ in self.params.values():
            counts[owner] += p.numel()
        if self.new_token_rows is not None:
            counts["llm"] += new_token_row_count(model)
        for name, pol in self.lora.items():
            counts[name] += lora_parameter_count(wrapped_model(getattr(model, name), name, ""), pol)
        counts["total"] = sum(counts.values())
        return counts


def plan_policy(model: nn.Module, policy: PolicyConfig, where: str = "training.policy") -> PolicyPlan:
    """The :class:`PolicyPlan` of ``policy`` for the VLM ``model`` (without adapters; not changed). Raises
    :class:`ConfigError` for keys that do not fit the model (unknown LoRA targets or sub-modules), located at
    ``where`` (e.g. ``stages[1].policy``)."""
    from mmfw.training.lora import check_lora_targets

    owner: dict[int, str] = {}
    for name in COMPONENTS:
        owner.update({id(p): name for p in getattr(model, name).parameters() if id(p) not in owner})
    params: dict[int, tuple[nn.Parameter, str, float]] = {}
    lora: dict[str, LoraPolicy] = {}
    for name, pol in policy.components().items():
        module = getattr(model, name)
        if isinstance(pol, LoraPolicy):
            check_lora_targets(wrapped_model(module, name, where), pol, f"{where}.{name}")
            lora[name] = pol
        else:
            params.update({id(p): (p, name, pol.lr_scale) for p in _policy_params(module, pol, name, where)})
    for path, pol in policy.modules.items():
        sub = _submodule(model, path, where)
        for p in sub.parameters():
            params.pop(id(p), None)
        params.update({id(p): (p, owner[id(p)], pol.lr_scale)
                       for p in _policy_params(sub, pol, f"modules.{path}", where)})
    if policy.new_token_embeddings:  # only their new rows train (see train_new_token_rows)
        if any(id(w) in params for w in embedding_weights(model)):
            raise ConfigError([f"{where}.new_token_embeddings: the LLM's embeddings are already trained in full by "
                               "another policy; train either every row or the new ones"])
    return PolicyPlan(params, lora, policy.llm.lr_scale if policy.new_token_embeddings else None)


def apply_policy(model: nn.Module, policy: PolicyConfig, where: str = "training.policy") -> AppliedPolicy:
    """Apply ``policy`` to the VLM ``model`` in place (its :class:`PolicyPlan`: gradient checkpointing, LoRA
    wrapping, ``requires_grad``); config problems raise :class:`ConfigError` naming the key."""
    plan = plan_policy(model, policy, where)
    counts = plan.counts(model)
    for name, pol in policy.components().items():
        if pol.gradient_checkpointing:
            enable_gradient_checkpointing(getattr(model, name), name, where)
    for name, pol in plan.lora.items():
        wrap_lora(getattr(model, name), name, pol, where)
    model.requires_grad_(False)
    scales = {pid: scale for pid, (_, _, scale) in plan.params.items()}
    for p, _, _ in plan.params.values():
        p.requires_grad_(True)
    for name, pol in plan.lora.items():
        for n, p in getattr(model, name).named_parameters():
            if is_lora_parameter(n):
                p.requires_grad_(True)
                scales[id(p)] = pol.lr_scale
    new_rows = train_new_token_rows(model, where) if plan.new_token_rows is not None else None
    if new_rows is not None:
        scales.update({id(w): plan.new_token_rows for w in new_rows.weights})
    logger.info("trainable parameters: %s", counts)
    return AppliedPolicy(counts, scales, no_decay={id(w) for w in new_rows.weights} if new_rows else set())


def trainable_parameter_counts(model: nn.Module, policy: PolicyConfig,
                               where: str = "training.policy") -> dict[str, int]:
    """Trainable parameters per component (and ``total``) that ``policy`` would give ``model``, computed without
    changing it (the model may live on the meta device): the counts of its :class:`PolicyPlan`."""
    return plan_policy(model, policy, where).counts(model)


def stage_policy_counts(cfg: Any, registries: Any, model: nn.Module | None = None) -> dict[str, dict[str, int]]:
    """Trainable parameters of every stage of an experiment (``{stage name: counts}``), from a model built on the
    meta device (no memory, no weights). Raises :class:`ConfigError` naming the stage's policy key on problems.

    ``model``: the VLM of ``cfg.model`` already built on the meta device (untouched, e.g.
    :meth:`mmfw.training.validate.ValidationContext.meta_model`); built here when None."""
    if model is None:
        from mmfw.model.builder import build_model

        with torch.device("meta"):
            model, _ = build_model(cfg.model, registries)
    return {stage.name: trainable_parameter_counts(
                model, stage.training.policy, "training.policy" if stage.implicit else f"stages[{stage.index}].policy")
            for stage in cfg.stage_plan()}


def check_stage_policies(cfg: Any, registries: Any, meta_model: nn.Module | None = None) -> None:
    """Check every stage's policy against the model (built on the meta device) before anything trains, so a LoRA
    target that matches nothing in stage 2 fails now, not after stage 1; logs what each stage trains.

    Skipped while a file the model reads (e.g. the tokenizer of ``data.build_tokenizer``) is one the run generates
    and it is not there yet: the stage checks it when it starts, after its data are prepared.

    ``meta_model``: the VLM of ``cfg.model`` that validation already built on the meta device (``mmfw train`` passes
    :meth:`~mmfw.training.validate.ValidationContext.meta_model`), checked instead of building it a second time.
    None (validation did not run, or could not build it cheaply: a component loads pretrained weights) builds it
    here, as before.
    """
    from mmfw.config.validate import ConfigContext

    generated = ConfigContext(cfg, registries)
    pending = [src for c in cfg.model.components().values() for src in c.sources().values()
               if generated.is_generated(src) and not Path(src).exists()]
    if pending:
        logger.debug("policy pre-check skipped until %s are generated", pending)
        return
    try:
        counts = stage_policy_counts(cfg, registries, meta_model)
    except ConfigError:
        raise
    except Exception as e:  # a component that cannot be built on the meta device: checked at stage start
        logger.debug("policy pre-check skipped (%s: %s)", type(e).__name__, e)
        return
    for name, c in counts.items():
        logger.info("stage %r trains %s parameters (%s)", name, f"{c['total']:,}",
                    ", ".join(f"{k} {v:,}" for k, v in c.items() if k != "total" and v))
