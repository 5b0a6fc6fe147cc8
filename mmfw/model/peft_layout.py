"""What peft and transformers expect next to a LoRA adapter, so a run's adapters load without mmfw.

:func:`complete_adapter_dir` finishes an adapter directory written by peft's ``save_pretrained``:

- the trained non-LoRA modules of the wrapped model (e.g. the LLM's head, final norm and embeddings, trained
  ``full`` by the stage's ``modules`` policy) go where peft expects them: listed in ``modules_to_save`` of
  ``adapter_config.json``, their tensors in ``adapter_model.safetensors`` under peft's names
  (``base_model.model.lm_head.weight``);
- for a causal LM, the base model (every non-adapter weight, under transformers' names) is written in transformers'
  format to ``base/`` inside the adapter directory, and ``base_model_name_or_path`` points at it, so
  ``PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(DIR/base), DIR)`` and
  ``AutoPeftModelForCausalLM.from_pretrained(DIR)`` give the LLM of the mmfw model;
- the template model card (``README.md``) that peft writes is removed.

:func:`point_at_base` rewrites ``base_model_name_or_path`` as an absolute path after a directory has been moved
into place (checkpoints and final models are written under a temporary name, then renamed).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors.torch import load_file, save_file

from mmfw.model.adapters import ADAPTERS_DIR, is_lora_parameter

if TYPE_CHECKING:
    import torch
    from peft import PeftModel

BASE_DIR = "base"
PEFT_PREFIX = "base_model.model."


def trained_modules(peft_model: PeftModel) -> dict[str, dict[str, torch.Tensor]]:
    """Module path (in the base model) -> its tensors, for every module with trainable non-adapter parameters."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for name, param in peft_model.named_parameters():
        if not param.requires_grad or is_lora_parameter(name) or not name.startswith(PEFT_PREFIX):
            continue
        module, _, leaf = name[len(PEFT_PREFIX):].rpartition(".")
        out.setdefault(module, {})[leaf] = param.detach()
    return out


def base_state_dict(peft_model: PeftModel) -> dict[str, torch.Tensor]:
    """The wrapped model's weights under its own (transformers) names, adapters left out."""
    out = {}
    for key, value in peft_model.state_dict().items():
        if not key.startswith(PEFT_PREFIX) or is_lora_parameter(key):
            continue
        out[key[len(PEFT_PREFIX):].replace(".base_layer.", ".")] = value.detach()
    return out


def complete_adapter_dir(peft_model: PeftModel, path: str | Path, causal_lm: bool, with_base: bool = True) -> None:
    """Add ``modules_to_save``, the transformers base model (``with_base``, causal LMs) and drop the model card."""
    path = Path(path)
    (path / "README.md").unlink(missing_ok=True)
    config_file, weights_file = path / "adapter_config.json", path / "adapter_model.safetensors"
    config = json.loads(config_file.read_text())
    modules = trained_modules(peft_model)
    if modules:
        tensors = load_file(str(weights_file))
        for module, params in modules.items():
            for leaf, value in params.items():
                tensors[f"{PEFT_PREFIX}{module}.{leaf}"] = value.to("cpu").contiguous().clone()
        save_file(tensors, str(weights_file), metadata={"format": "pt"})
        config["modules_to_save"] = sorted(set(config.get("modules_to_save") or []) | set(modules))
    if causal_lm and with_base:
        base = peft_model.get_base_model()
        state = {k: v.to("cpu").contiguous() for k, v in base_state_dict(peft_model).items()}
        from transformers.utils import logging as hf_logging

        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # no "Writing model shards" bar in the training log
        try:
            base.save_pretrained(path / BASE_DIR, state_dict=state)
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        (path / BASE_DIR / "README.md").unlink(missing_ok=True)
        config["base_model_name_or_path"] = str((path / BASE_DIR).resolve())
    config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def point_at_base(model_dir: str | Path, adapters_dir: str = ADAPTERS_DIR) -> None:
    """Set ``base_model_name_or_path`` of every adapter under ``model_dir`` that has a ``base/`` to its absolute path."""
    root = Path(model_dir) / adapters_dir
    if not root.is_dir():
        return
    for config_file in sorted(root.glob("*/adapter_config.json")):
        base = config_file.parent / BASE_DIR
        if not base.is_dir():
            continue
        config = json.loads(config_file.read_text())
        config["base_model_name_or_path"] = str(base.resolve())
        config_file.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
