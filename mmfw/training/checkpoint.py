"""Checkpoints and stage outputs, written atomically (temporary directory, fsync, rename), the last K kept.

A checkpoint ``STAGE_DIR/checkpoints/step-N`` is a model directory (``config.yaml``, ``tokenizer/``,
``model.safetensors`` with plain parameter names, ``adapters/NAME`` in peft's format for LoRA components) plus
``state/`` (Accelerate's optimizer, scheduler and RNG state; loaded with ``weights_only=True``) and
``trainer_state.json`` (step, epoch, position in the epoch). Directories being written are named ``.step-N.tmp`` and
are never seen as checkpoints; old checkpoints are renamed to ``.step-N.del`` before they are deleted, so a process
killed at any moment leaves every listed checkpoint complete.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from transformers import PreTrainedTokenizerBase

from mmfw.config import ExperimentConfig, save_config
from mmfw.config.loader import RESOLVED_CONFIG_NAME
from mmfw.model.builder import WEIGHTS_NAME
from mmfw.model.peft_layout import point_at_base
from mmfw.training.lora import plain_state_dict, save_adapters

CHECKPOINTS_DIR = "checkpoints"
TRAINER_STATE = "trainer_state.json"
STATE_DIR = "state"
_STEP_RE = re.compile(r"^step-(\d+)$")


def checkpoint_dirs(stage_dir: str | Path) -> list[Path]:
    """Finished checkpoints of a stage (or single-stage run) directory, oldest first."""
    root = Path(stage_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_RE.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(stage_dir: str | Path) -> Path | None:
    dirs = checkpoint_dirs(stage_dir)
    return dirs[-1] if dirs else None


def staging_path(stage_dir: str | Path, step: int) -> Path:
    """Where checkpoint ``step`` is written before it is committed (not seen by :func:`checkpoint_dirs`)."""
    return Path(stage_dir) / CHECKPOINTS_DIR / f".step-{step}.tmp"


def staging_dir(stage_dir: str | Path, step: int) -> Path:
    """A fresh, empty :func:`staging_path` directory."""
    tmp = staging_path(stage_dir, step)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def remove_stale(stage_dir: str | Path) -> list[Path]:
    """Delete leftovers of interrupted saves and deletions (``.step-N.tmp``, ``.step-N.del``)."""
    root = Path(stage_dir) / CHECKPOINTS_DIR
    stale = [p for p in root.glob(".step-*") if p.is_dir()] if root.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def _fsync_tree(root: Path) -> None:
    for f in root.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    for d in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        _fsync_dir(d)


def _fsync_dir(path: Path) -> None:
    """Persist a directory's entries (renames into it); a no-op where directories cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit_checkpoint(tmp: Path, step: int, trainer_state: dict[str, Any], keep_last: int) -> Path:
    """Write the trainer state, fsync, rename ``tmp`` to ``step-N``, then delete all but the last ``keep_last``."""
    (tmp / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=2), encoding="utf-8")
    _fsync_tree(tmp)
    final = tmp.parent / f"step-{step}"
    if final.exists():
        trash = tmp.parent / f".step-{step}.del"
        os.replace(final, trash)
        shutil.rmtree(trash, ignore_errors=True)
    os.replace(tmp, final)
    point_at_base(final)
    _fsync_dir(final.parent)
    for old in checkpoint_dirs(tmp.parent.parent)[:-keep_last]:
        trash = old.parent / f".{old.name}.del"
        os.replace(old, trash)
        shutil.rmtree(trash, ignore_errors=True)
    return final


def read_trainer_state(checkpoint: str | Path) -> dict[str, Any]:
    return json.loads((Path(checkpoint) / TRAINER_STATE).read_text(encoding="utf-8"))


def write_model_dir(model: torch.nn.Module, tokenizer: PreTrainedTokenizerBase, cfg: ExperimentConfig,
                    directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
    """A model directory loadable by :func:`mmfw.model.io.load_model_dir`: plain-named base weights in
    safetensors, LoRA adapters in peft's format, tokenizer and resolved config.

    ``state_dict`` (plain names) replaces the weights read from ``model`` (e.g. a full state dict gathered by
    Accelerate under FSDP/DeepSpeed).
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    weights = state_dict if state_dict is not None else plain_state_dict(model)
    weights = {k: v.detach().to("cpu").contiguous() for k, v in weights.items()}
    try:
        save_file(weights, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    except RuntimeError:  # tensors sharing memory (views of one buffer): store copies
        save_file({k: v.clone() for k, v in weights.items()}, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
    save_adapters(model, directory)
    tokenizer.save_pretrained(directory / "tokenizer")
    save_config(cfg, directory / RESOLVED_CONFIG_NAME)
    return directory


def publish_dir(tmp: Path, final: Path) -> Path:
    """Atomically make ``tmp`` (complete) visible as ``final``, replacing an existing ``final``."""
    _fsync_tree(tmp)
    if final.exists():
        trash = final.parent / f".{final.name}.old"
        if trash.exists():
            shutil.rmtree(trash)
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    point_at_base(final)
    _fsync_dir(final.parent)
    return final
