"""LoRA through peft: wrap a component's transformers model, save and reload adapters in peft's format, merge.

A component with a ``lora`` policy must wrap a transformers model in its ``model`` attribute (the LLMs, the HF vision
encoders); that model is replaced by a ``peft.PeftModel``. In a model directory the adapters of component ``NAME``
live in ``adapters/NAME`` (``adapter_config.json`` + ``adapter_model.safetensors``), so
``PeftModel.from_pretrained(vlm.NAME.model, DIR/adapters/NAME)`` loads them, while ``model.safetensors`` holds the
base weights under the plain (un-wrapped) parameter names, exactly as a model trained without LoRA.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.pytorch_utils import Conv1D

from mmfw.config import ConfigError
from mmfw.config.training import COMPONENTS, LoraPolicy
from mmfw.model.builder import CheckpointMismatchError

if TYPE_CHECKING:  # peft is imported where adapters are made or loaded (not needed to count them)
    from peft import LoraConfig, PeftModel

logger = logging.getLogger(__name__)

ADAPTERS_DIR = "adapters"
_ADAPTABLE = (nn.Linear, Conv1D, nn.Embedding, nn.Conv2d)
_LORA_PARAM = re.compile(r"\.lora_[A-Za-z_]+\.")


def wrapped_model(component: nn.Module, name: str, where: str) -> PreTrainedModel:
    """The transformers model that LoRA wraps, or a config error naming the policy key."""
    inner = getattr(component, "model", None)
    if not isinstance(inner, PreTrainedModel):
        raise ConfigError([f"{where}.{name}: lora needs a component that wraps a transformers model in `.model`; "
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


def lora_config(policy: LoraPolicy, causal_lm: bool) -> LoraConfig:
    from peft import LoraConfig

    targets = policy.target_modules if policy.target_modules == "all-linear" else list(policy.target_modules)
    return LoraConfig(r=policy.r, lora_alpha=policy.alpha, lora_dropout=policy.dropout, target_modules=targets,
                      use_rslora=policy.use_rslora, bias="none", task_type="CAUSAL_LM" if causal_lm else None)


def wrap_lora(component: nn.Module, name: str, policy: LoraPolicy, where: str) -> PeftModel:
    """Replace ``component.model`` by a ``PeftModel`` with fresh adapters (B = 0, so the output is unchanged)."""
    from peft import get_peft_model

    from mmfw.llms.base import LanguageModel

    inner = wrapped_model(component, name, where)
    check_lora_targets(inner, policy, f"{where}.{name}")
    with warnings.catch_warnings():  # peft asks transformers a deprecated question (is_gradient_checkpointing)
        warnings.simplefilter("ignore", FutureWarning)
        peft_model = get_peft_model(inner, lora_config(policy, causal_lm=isinstance(component, LanguageModel)))
    component.model = peft_model
    return peft_model


def lora_components(model: nn.Module) -> dict[str, PeftModel]:
    """The VLM's components whose ``model`` is currently a ``PeftModel``."""
    from peft import PeftModel

    out = {}
    for name in COMPONENTS:
        inner = getattr(getattr(model, name, None), "model", None)
        if isinstance(inner, PeftModel):
            out[name] = inner
    return out


def is_lora_parameter(name: str) -> bool:
    return bool(_LORA_PARAM.search(f".{name}."))


def plain_key(key: str, wrapped: Iterable[str]) -> str | None:
    """The un-wrapped name of state-dict ``key`` of a model whose components ``wrapped`` hold a ``PeftModel``;
    ``None`` for adapter parameters."""
    for name in wrapped:
        prefix = f"{name}.model.base_model.model."
        if key.startswith(prefix):
            if is_lora_parameter(key):
                return None
            return f"{name}.model." + key[len(prefix):].replace(".base_layer.", ".")
    return key


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Base weights under plain names (adapters left out; a tensor shared by several names is kept once)."""
    wrapped = list(lora_components(model))
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, tuple[int, ...], tuple[int, ...]]] = set()
    for key, value in model.state_dict(keep_vars=True).items():
        pk = plain_key(key, wrapped)
        if pk is None:
            continue
        ident = (value.data_ptr(), tuple(value.shape), tuple(value.stride()))
        if value.numel() and ident in seen:
            continue
        seen.add(ident)
        out[pk] = value.detach()
    return out


def load_plain_state_dict(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load plain-named base weights into ``model``, whose components may be wrapped by peft. Every non-adapter
    weight must be present (tied weights may be stored once)."""
    wrapped = list(lora_components(model))
    target = model.state_dict()
    mapped, missing = {}, []
    ptr_to_key: dict[int, str] = {}
    for key, value in target.items():
        pk = plain_key(key, wrapped)
        if pk is None:
            continue
        if pk in state:
            mapped[key] = state[pk]
            ptr_to_key[value.data_ptr()] = key
        elif value.data_ptr() in ptr_to_key:
            continue  # tied to a weight already loaded
        else:
            missing.append(pk)
    unexpected = sorted(set(state) - {plain_key(k, wrapped) for k in target})
    if missing or unexpected:
        raise CheckpointMismatchError(f"{source} does not match the model built from the config: missing keys "
                                      f"{sorted(missing)[:10]}, unexpected keys {unexpected[:10]}")
    wrong = [f"{plain_key(k, wrapped)}: checkpoint {list(v.shape)} vs model {list(target[k].shape)}"
             for k, v in mapped.items() if tuple(v.shape) != tuple(target[k].shape)]
    if wrong:
        more = f" (and {len(wrong) - 5} more)" if len(wrong) > 5 else ""
        raise CheckpointMismatchError(f"{source} does not match the model built from the config: {len(wrong)} "
                                      f"tensor(s) differ in shape: {'; '.join(wrong[:5])}{more}")
    model.load_state_dict(mapped, strict=False)


def save_adapters(model: nn.Module, directory: str | Path) -> list[Path]:
    """Write each LoRA component's adapter in peft's format to ``directory/adapters/NAME``."""
    out = []
    for name, peft_model in lora_components(model).items():
        path = Path(directory) / ADAPTERS_DIR / name
        peft_model.save_pretrained(str(path), safe_serialization=True)
        out.append(path)
    return out


def adapter_dirs(directory: str | Path) -> dict[str, Path]:
    root = Path(directory) / ADAPTERS_DIR
    if not root.is_dir():
        return {}
    return {p.name: p for p in sorted(root.iterdir()) if (p / "adapter_config.json").exists()}


def load_adapter_weights(model: nn.Module, directory: str | Path) -> None:
    """Load saved adapters into a model whose components are already wrapped (resuming a LoRA stage)."""
    from peft.utils import set_peft_model_state_dict
    from safetensors.torch import load_file

    wrapped = lora_components(model)
    found = adapter_dirs(directory)
    if set(found) != set(wrapped):
        raise ValueError(f"{directory}: adapters for {sorted(found)} but the model has LoRA on {sorted(wrapped)}")
    for name, path in found.items():
        result = set_peft_model_state_dict(wrapped[name], load_file(str(path / "adapter_model.safetensors")))
        bad = [k for k in result.unexpected_keys if is_lora_parameter(k)]
        if bad:
            raise ValueError(f"{path}: unexpected adapter keys {bad[:5]}")


def load_adapters(model: nn.Module, directory: str | Path, merge: bool = True) -> list[str]:
    """Attach the adapters saved in ``directory/adapters`` with ``PeftModel.from_pretrained`` and, with ``merge``,
    fold them into the base weights. Returns the names of the components that had adapters."""
    from peft import PeftModel

    names = []
    for name, path in adapter_dirs(directory).items():
        component = getattr(model, name)
        device = next(component.parameters()).device
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = PeftModel.from_pretrained(component.model, str(path), is_trainable=False).to(device)
        component.model = peft_model.merge_and_unload() if merge else peft_model
        names.append(name)
    if names:
        logger.info("loaded LoRA adapters of %s from %s%s", names, directory, " (merged)" if merge else "")
    return names


def merge_adapters(model: nn.Module) -> list[str]:
    """Fold every attached adapter into its base weights; the components hold plain transformers models again."""
    names = []
    for name, peft_model in lora_components(model).items():
        getattr(model, name).model = peft_model.merge_and_unload()
        names.append(name)
    return names
