"""LoRA through peft: wrap a component's transformers model with adapters, check and count the adapter targets.

A component with a ``lora`` policy must wrap a transformers model (:meth:`ComponentContract.inner_model`: the LLMs,
the HF vision encoders); that model is replaced by a ``peft.PeftModel``. Saving, reloading and merging adapters is
in :mod:`mmfw.model.adapters` (re-exported here).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from mmfw.config.training import LoraPolicy
from mmfw.errors import ConfigError
from mmfw.model.adapters import (  # noqa: F401  (re-exported: adapter I/O used with the wrapping)
    ADAPTERS_DIR,
    adapter_dirs,
    is_lora_parameter,
    load_adapter_weights,
    load_adapters,
    load_plain_state_dict,
    lora_components,
    merge_adapters,
    plain_key,
    plain_state_dict,
    save_adapters,
)

if TYPE_CHECKING:  # peft is imported where adapters are made (not needed to count them)
    from peft import LoraConfig, PeftModel

_ADAPTABLE = (nn.Linear, Conv1D, nn.Embedding, nn.Conv2d)


def wrapped_model(component: nn.Module, name: str, where: str) -> PreTrainedModel:
    """The transformers model that LoRA wraps, or a config error naming the policy key."""
    inner = component.inner_model()
    if inner is None:
        raise ConfigError([f"{where}.{name}: lora needs a component that wraps a transformers model (inner_model()); "
                           f"{type(component).__name__} does not (use 'full' or 'frozen')"])
    return inner


def lora_target_names(hf_model: nn.Module, policy: LoraPolicy) -> list[str]:
    """Names of the modules of ``hf_model`` that get adapters (peft's matching rules, ``all-linear`` included)."""
    names = [n for n, m in hf_model.named_modules() if n]
    if policy.target_modules == "all-linear":
        out_emb = hf_model.get_output_embeddings() if isinstance(hf_model, PreTrainedModel) else None
        return [n for n in names
                if isinstance(hf_model.get_submodule(n), (nn.Linear, Conv1D)) and hf_model.get_submodule(n) is not out_emb]
    return [n for n in names if any(n == t or n.endswith(f".{t}") for t in policy.target_modules)]


def check_lora_targets(hf_model: nn.Module, policy: LoraPolicy, where: str) -> None:
    """Every ``target_modules`` entry must match at least one adaptable layer; else a config error naming it."""
    if policy.target_modules == "all-linear":
        if not lora_target_names(hf_model, policy):
            raise ConfigError([f"{where}.target_modules: 'all-linear' matches no linear layer"])
        return
    modules = dict(hf_model.named_modules())
    leaves = sorted({n.rsplit(".", 1)[-1] for n, m in modules.items() if n and isinstance(m, _ADAPTABLE)})
    problems = []
    for i, target in enumerate(policy.target_modules):
        matched = [n for n in modules if n and (n == target or n.endswith(f".{target}"))]
        if not matched:
            problems.append(f"{where}.target_modules[{i}]: {target!r} matches no module; layers that can take an "
                            f"adapter: {', '.join(leaves)}")
        elif not any(isinstance(modules[n], _ADAPTABLE) for n in matched):
            problems.append(f"{where}.target_modules[{i}]: {target!r} matches {matched[0]!r}, a "
                            f"{type(modules[matched[0]]).__name__}, which cannot take an adapter; use one of: "
                            f"{', '.join(leaves)}")
    if problems:
        raise ConfigError(problems)


def lora_parameter_count(hf_model: nn.Module, policy: LoraPolicy) -> int:
    """Trainable parameters the adapters of ``policy`` add to ``hf_model`` (computed without wrapping it)."""
    total = 0
    for name in lora_target_names(hf_model, policy):
        m = hf_model.get_submodule(name)
        if isinstance(m, nn.Linear):
            total += policy.r * (m.in_features + m.out_features)
        elif isinstance(m, Conv1D):
            total += policy.r * sum(m.weight.shape)
        elif isinstance(m, nn.Embedding):
            total += policy.r * (m.num_embeddings + m.embedding_dim)
        elif isinstance(m, nn.Conv2d):
            kh, kw = m.kernel_size
            total += policy.r * (m.in_channels // m.groups * kh * kw + m.out_channels)
    return total


def lora_config(policy: LoraPolicy, task_type: str | None) -> LoraConfig:
    from peft import LoraConfig

    targets = policy.target_modules if policy.target_modules == "all-linear" else list(policy.target_modules)
    return LoraConfig(r=policy.r, lora_alpha=policy.alpha, lora_dropout=policy.dropout, target_modules=targets,
                      use_rslora=policy.use_rslora, bias="none", task_type=task_type)


def wrap_lora(component: nn.Module, name: str, policy: LoraPolicy, where: str) -> PeftModel:
    """Replace the component's inner model by a ``PeftModel`` with fresh adapters (B = 0, so the output is unchanged)."""
    from peft import get_peft_model

    inner = wrapped_model(component, name, where)
    check_lora_targets(inner, policy, f"{where}.{name}")
    with warnings.catch_warnings():  # peft asks transformers a deprecated question (is_gradient_checkpointing)
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(inner, lora_config(policy, task_type=component.lora_task_type))
    component.replace_inner_model(peft_model)
    return peft_model
