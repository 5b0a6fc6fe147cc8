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


# -- damaged checkpoints and failed writes ------------------------------------------------------------------------
def _safetensors_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete safetensors file (header and size checked, nothing loaded), or None."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{path.name} is truncated ({size} bytes)"
            n = int.from_bytes(head, "little")
            if n > size - 8:
                return f"{path.name} is truncated (header of {n} bytes in a {size}-byte file)"
            header = json.loads(f.read(n))
    except (OSError, ValueError) as e:
        return f"{path.name} cannot be read ({e})"
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end > size:
        return f"{path.name} is truncated ({size} of {8 + n + end} bytes)"
    return None


def _torch_file_problem(path: Path) -> str | None:
    """Why a ``torch.save`` file (a zip archive) is incomplete, or None; read without unpickling anything."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as e:
        return f"{path.parent.name}/{path.name} is damaged or truncated ({e})"
    return f"{path.parent.name}/{path.name} is damaged ({bad} fails its CRC)" if bad else None


def checkpoint_problem(checkpoint: str | Path) -> str | None:
    """Why ``checkpoint`` cannot be resumed from (a truncated or missing file), or None when it is complete."""
    ckpt = Path(checkpoint)
    try:
        read_trainer_state(ckpt)
    except (OSError, ValueError) as e:
        return f"{TRAINER_STATE} cannot be read ({e})"
    for path in sorted(ckpt.rglob("*")):
        if not path.is_file():
            continue
        if path.name.endswith(".safetensors"):
            problem = _safetensors_problem(path)
        elif path.parent.name == STATE_DIR and path.suffix in (".bin", ".pkl", ".pt"):
            problem = _torch_file_problem(path)
        else:
            continue
        if problem:
            return problem
    if not (ckpt / WEIGHTS_NAME).exists() and not any((ckpt / STATE_DIR).glob("*.safetensors")):
        return f"no {WEIGHTS_NAME}"
    return None


def resume_checkpoint(stage_dir: str | Path) -> Path | None:
    """The newest checkpoint of ``stage_dir`` that is complete; damaged newer ones are named in a warning."""
    import logging

    log = logging.getLogger(__name__)
    damaged = []
    for ckpt in reversed(checkpoint_dirs(stage_dir)):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            if damaged:
                log.warning("resuming from %s: the newer checkpoint(s) %s cannot be loaded (%s)", ckpt,
                            ", ".join(p.name for p, _ in damaged), "; ".join(f"{p.name}: {w}" for p, w in damaged))
            return ckpt
        damaged.append((ckpt, problem))
    if damaged:
        log.warning("no loadable checkpoint in %s (%s); the stage starts over", Path(stage_dir) / CHECKPOINTS_DIR,
                    "; ".join(f"{p.name}: {w}" for p, w in damaged))
    return None


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0


DISK_FULL_ERRNOS = (28, 27, 122)  # ENOSPC, EFBIG (a file-size limit), EDQUOT


def is_write_failure(err: BaseException) -> bool:
    """An error of writing files: an ``OSError``, or torch's ``RuntimeError`` for a short write of ``torch.save``."""
    return isinstance(err, OSError) or (isinstance(err, RuntimeError) and any(
        s in str(err) for s in ("unexpected pos", "PytorchStreamWriter", "file write failed")))


def failed_write_error(err: BaseException, tmp: Path, stage_dir: str | Path, what: str) -> Exception:
    """The error to raise when writing ``tmp`` failed: the partial directory is deleted (the previous checkpoint is
    untouched) and the message says how much space the write needs and how much is free."""
    from mmfw.training.errors import TrainingError

    written = _tree_bytes(tmp)
    shutil.rmtree(tmp, ignore_errors=True)
    previous = latest_checkpoint(stage_dir)
    needed = max(written, _tree_bytes(previous) if previous is not None else 0)
    try:
        free = shutil.disk_usage(Path(stage_dir)).free
    except OSError:
        free = None
    kept = f"the previous checkpoint {previous} is intact" if previous is not None else "no earlier checkpoint"
    errno_ = getattr(err, "errno", None)
    if isinstance(err, OSError):
        reason = f"{os.strerror(errno_) if errno_ else err} ({err.filename or tmp})"
    else:
        reason = f"a file could not be written completely (full disk or file-size limit?) in {tmp}"
    space = f"; a checkpoint needs about {needed / 2**20:.1f} MiB" + (
        f", {free / 2**20:.1f} MiB are free" if free is not None else "")
    if isinstance(err, OSError) and errno_ not in DISK_FULL_ERRNOS:
        space = ""
    return TrainingError(f"writing {what} failed: {reason}{space}; {kept}. Free space (or lower "
                         "training.keep_last) and rerun with --resume")
