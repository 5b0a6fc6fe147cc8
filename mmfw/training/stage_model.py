"""The model a stage trains: built from the config, started from the previous stage's output (LoRA adapters merged
into the base weights) or from the checkpoint being resumed, with the stage's policy applied (and compiled with
``training.compile``)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from transformers import AutoTokenizer

from mmfw.components import Registries
from mmfw.config import ExperimentConfig
from mmfw.config.experiment import ResolvedStage
from mmfw.model.builder import WEIGHTS_NAME, build_model, load_weights
from mmfw.training.lora import load_adapter_weights, load_adapters, load_plain_state_dict
from mmfw.training.policy import AppliedPolicy, apply_policy

logger = logging.getLogger(__name__)


def policy_where(stage: ResolvedStage) -> str:
    """The YAML path of a stage's policy (for messages)."""
    return "training.policy" if stage.implicit else f"stages[{stage.index}].policy"


def build_stage_model(cfg: ExperimentConfig, registries: Registries, stage: ResolvedStage, init_from: Path | None,
                      resume_from: Path | None, load_resumed_weights: bool = True) -> tuple[Any, Any, AppliedPolicy]:
    """The model, its tokenizer and the applied policy of ``stage``.

    ``init_from`` is the previous stage's output; ``resume_from`` a checkpoint of this stage, whose weights are
    loaded after the policy is applied (so that LoRA adapters exist), unless ``load_resumed_weights`` is false
    (Accelerate restores a sharded model itself).
    """
    source = resume_from or init_from
    tokenizer = AutoTokenizer.from_pretrained(source / "tokenizer") if source is not None else None
    model, tokenizer = build_model(cfg.model, registries, tokenizer=tokenizer)
    if init_from is not None and resume_from is None:
        load_weights(model, init_from)
        load_adapters(model, init_from, merge=True)
    applied = apply_policy(model, stage.training.policy, policy_where(stage))
    if resume_from is not None and load_resumed_weights:
        load_plain_state_dict(model, load_file(str(resume_from / WEIGHTS_NAME)), str(resume_from))
        load_adapter_weights(model, resume_from)
    if stage.training.compile:
        compile_components(model)
    return model, tokenizer, applied


def compile_components(model: Any) -> list[str]:
    """``torch.compile`` each component's inner model in place (``nn.Module.compile``: the module keeps its
    parameters and state-dict names, its calls go through the compiled graph); the names of the compiled slots."""
    compiled = []
    for slot, component in model.components().items():
        inner = component.inner_model()
        if inner is not None:
            inner.compile()
            compiled.append(slot)
    logger.info("torch.compile: %s (compiled on the first steps)", ", ".join(compiled) or "no component wraps a model")
    return compiled
