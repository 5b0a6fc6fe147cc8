"""LoRA adapters on disk: save, reload and merge them in peft's format; base weights under their plain names.

In a model directory the adapters of component ``NAME`` live in ``adapters/NAME`` (``adapter_config.json`` +
``adapter_model.safetensors``), so ``PeftModel.from_pretrained(component.inner_model(), DIR/adapters/NAME)`` loads
them, while ``model.safetensors`` holds the base weights under the plain (un-wrapped) parameter names, exactly as a
model trained without LoRA. Below both :mod:`mmfw.model.io` (which merges the adapters of a saved model) and
:mod:`mmfw.training` (which wraps components and saves their adapters, see :mod:`mmfw.training.lora`).
"""

from __future__ import annotations

import logging
import re
import sys
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from mmfw.errors import CheckpointMismatchError

if TYPE_CHECKING:  # peft is imported where adapters are loaded (not needed to name them)
    from peft import PeftModel

    from mmfw.model.vlm import VisionLanguageModel

logger = logging.getLogger(__name__)

__all__ = ["ADAPTERS_DIR", "adapter_dirs", "is_lora_parameter", "load_adapter_weights", "load_adapters",
           "load_plain_state_dict", "lora_components", "merge_adapters", "plain_key", "plain_state_dict",
           "save_adapters"]

ADAPTERS_DIR = "adapters"
_LORA_PARAM = re.compile(r"\.lora_[A-Za-z_]+\.")


def lora_components(model: VisionLanguageModel) -> dict[str, PeftModel]:
    """The VLM's components whose inner model (:meth:`ComponentContract.inner_model`) is currently a ``PeftModel``."""
    peft = sys.modules.get("peft")
    if peft is None:  # never imported in this process: nothing can be wrapped (and importing it takes ~0.3 s)
        return {}
    PeftModel = peft.PeftModel  # noqa: N806
    return {key: component.inner_model() for key, component in model.components().items()
            if isinstance(component.inner_model(), PeftModel)}


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
        raise CheckpointMismatchError(f"{source} does not match the model: missing keys {sorted(missing)[:10]}, unexpected keys "
                         f"{unexpected[:10]}")
    wrong = [f"{plain_key(k, wrapped)}: checkpoint {list(v.shape)} vs model {list(target[k].shape)}"
             for k, v in mapped.items() if tuple(v.shape) != tuple(target[k].shape)]
    if wrong:
        more = f" (and {len(wrong) - 5} more)" if len(wrong) > 5 else ""
        raise CheckpointMismatchError(f"{source} does not match the model built from the config: {len(wrong)} "
                                      f"tensor(s) differ in shape: {'; '.join(wrong[:5])}{more}")
    model.load_state_dict(mapped, strict=False)


def save_adapters(model: VisionLanguageModel, directory: str | Path, with_base: bool = True) -> list[Path]:
    """Write each LoRA component's adapter in peft's format to ``directory/adapters/NAME``, with its trained
    non-LoRA modules as ``modules_to_save`` and (``with_base``, causal LMs) the base model in transformers format in
    ``base/`` (see :mod:`mmfw.model.peft_layout`)."""
    from mmfw.model.peft_layout import complete_adapter_dir

    out = []
    for name, peft_model in lora_components(model).items():
        path = Path(directory) / ADAPTERS_DIR / name
        peft_model.save_pretrained(str(path), safe_serialization=True)
        complete_adapter_dir(peft_model, path, causal_lm=model.components()[name].lora_task_type == "CAUSAL_LM",
                             with_base=with_base)
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
        raise CheckpointMismatchError(f"{directory}: adapters for {sorted(found)} but the model has LoRA on {sorted(wrapped)}")
    for name, path in found.items():
        result = set_peft_model_state_dict(wrapped[name], load_file(str(path / "adapter_model.safetensors")))
        bad = [k for k in result.unexpected_keys if is_lora_parameter(k)]
        if bad:
            raise CheckpointMismatchError(f"{path}: unexpected adapter keys {bad[:5]}")


def load_adapters(model: VisionLanguageModel, directory: str | Path, merge: bool = True) -> list[str]:
    """Attach the adapters saved in ``directory/adapters`` with ``PeftModel.from_pretrained`` and, with ``merge``,
    fold them into the base weights. Returns the names of the components that had adapters."""
    from peft import PeftModel

    names = []
    for name, path in adapter_dirs(directory).items():
        component = model.components()[name]
        device = next(component.parameters()).device
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = PeftModel.from_pretrained(component.inner_model(), str(path), is_trainable=False).to(device)
        component.replace_inner_model(peft_model.merge_and_unload() if merge else peft_model)
        names.append(name)
    if names:
        logger.info("loaded LoRA adapters of %s from %s%s", names, directory, " (merged)" if merge else "")
    return names


def merge_adapters(model: VisionLanguageModel) -> list[str]:
    """Fold every attached adapter into its base weights; the components hold plain transformers models again."""
    names = []
    for name, peft_model in lora_components(model).items():
        model.components()[name].replace_inner_model(peft_model.merge_and_unload())
        names.append(name)
    return names
