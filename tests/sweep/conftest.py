"""Fixtures of the sweep tests: a tiny experiment config whose data and tokenizer the sweep generates (shared by the
studies of one session), and a writer for sweep files next to it."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import TINY_MODEL


def tiny_base(data_dir: Path) -> dict[str, Any]:
    """A tiny CLIP + MLP + Llama experiment trained 4 steps (checkpoint at step 2) on 32 generated samples."""
    model = copy.deepcopy(TINY_MODEL)
    model["llm"]["tokenizer"] = str(data_dir / "tokenizer")
    return {
        "name": "tiny", "seed": 0, "output_dir": "runs/unused", "model": model,
        "data": {"synthetic": {"out_dir": str(data_dir / "synth"), "num_train": 32, "num_eval": 6,
                               "image_size": 32, "seed": 0},
                 "build_tokenizer": {"out_dir": str(data_dir / "tokenizer"), "vocab_size": 300},
                 "train": [{"path": str(data_dir / "synth" / "train.json")}],
                 "eval": [{"path": str(data_dir / "synth" / "eval.json")}], "max_length": 96},
        "training": {"max_steps": 4, "batch_size": 8, "learning_rate": 3e-3, "warmup_ratio": 0.0, "log_every": 1,
                     "save_every": 2, "max_new_tokens": 2, "trackers": []},
    }


@pytest.fixture(scope="session")
def shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the sweeps of this session generate their data (the first one writes it, the others reuse it)."""
    return tmp_path_factory.mktemp("sweep-data")


@pytest.fixture
def base_file(tmp_path: Path, shared_data_dir: Path) -> Path:
    path = tmp_path / "base.yaml"
    path.write_text(yaml.safe_dump(tiny_base(shared_data_dir), sort_keys=False))
    return path


def write_sweep(directory: Path, body: dict[str, Any], name: str = "sweep.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path
