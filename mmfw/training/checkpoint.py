"""Checkpoints: ``RUN_DIR/checkpoints/step-N`` written atomically (temporary directory, then rename), last K kept.

A checkpoint is a model directory (see :mod:`mmfw.model.io`) plus ``state/`` (Accelerate's optimizer, scheduler and
RNG state) and ``trainer_state.json``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

CHECKPOINTS_DIR = "checkpoints"
TRAINER_STATE = "trainer_state.json"
_STEP_RE = re.compile(r"^step-(\d+)$")


def checkpoint_dirs(run_dir: str | Path) -> list[Path]:
    """Finished checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_RE.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    dirs = checkpoint_dirs(run_dir)
    return dirs[-1] if dirs else None


def staging_path(run_dir: str | Path, step: int) -> Path:
    """Where checkpoint ``step`` is written before it is committed (not seen by :func:`checkpoint_dirs`)."""
    return Path(run_dir) / CHECKPOINTS_DIR / f".step-{step}.tmp"


def staging_dir(run_dir: str | Path, step: int) -> Path:
    """A fresh, empty :func:`staging_path` directory."""
    tmp = staging_path(run_dir, step)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit_checkpoint(tmp: Path, step: int, trainer_state: dict[str, Any], keep_last: int) -> Path:
    """Write the trainer state, fsync, rename ``tmp`` to ``step-N``, then delete all but the last ``keep_last``."""
    (tmp / TRAINER_STATE).write_text(json.dumps(trainer_state, indent=2), encoding="utf-8")
    for f in tmp.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    final = tmp.parent / f"step-{step}"
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in checkpoint_dirs(tmp.parent.parent)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_trainer_state(checkpoint: str | Path) -> dict[str, Any]:
    return json.loads((Path(checkpoint) / TRAINER_STATE).read_text(encoding="utf-8"))
