"""Fixtures of the training tests: a small training file (few batches per epoch, so runs cross epoch boundaries), a
tiny experiment dict, and a runner for ``mmfw`` in a subprocess (for kill / resume / multi-process tests)."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from mmfw.data.synth import SynthPaths

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("train_driver.py")


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models are fastest on one thread, and the tests share a small machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def small_train(synth_data: SynthPaths, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 48 training records (6 batches of 8 per epoch), images from the synthetic data directory."""
    records = json.loads(Path(synth_data.train).read_text())[:48]
    path = tmp_path_factory.mktemp("small") / "train.json"
    path.write_text(json.dumps(records))
    return path


def tiny_experiment_dict(tokenizer_dir: Path, synth_data: SynthPaths, train: Path, run_dir: Path) -> dict[str, Any]:
    from tests.conftest import TINY_MODEL

    model = copy.deepcopy(TINY_MODEL)
    model["llm"]["tokenizer"] = str(tokenizer_dir)
    image_root = str(Path(synth_data.train).parent)
    return {
        "name": "tiny", "seed": 0, "output_dir": str(run_dir), "model": model,
        "data": {"train": [{"path": str(train), "image_root": image_root}],
                 "eval": [{"path": str(synth_data.eval)}], "max_length": 96, "eval_max_samples": 8},
        "training": {"max_steps": 4, "batch_size": 8, "learning_rate": 3e-3, "warmup_ratio": 0.0, "log_every": 1,
                     "max_new_tokens": 3, "trackers": [], "policy": {"vision_encoder": "full"}},
    }


@pytest.fixture
def experiment(tokenizer_dir: Path, synth_data: SynthPaths, small_train: Path, tmp_path: Path) -> dict[str, Any]:
    return tiny_experiment_dict(tokenizer_dir, synth_data, small_train, tmp_path / "run")


def write_config(exp: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


def run_mmfw(args: list[str], *, driver_env: dict[str, str] | None = None, timeout: float = 300,
             check: bool = True, wait: bool = True) -> subprocess.CompletedProcess | subprocess.Popen:
    """``mmfw ARGS`` in a fresh interpreter (through ``train_driver.py``, whose test hooks ``driver_env`` turns on)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MMFW_DISABLE_PLUGIN_AUTOLOAD": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(driver_env or {})}
    cmd = [sys.executable, str(DRIVER), *args]
    if not wait:
        return subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"mmfw {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc


def launch_ranks(args: list[str], *, driver_env: dict[str, str] | None = None, timeout: float = 300
                 ) -> subprocess.CompletedProcess:
    """``mmfw train ... --num-processes N``, started here: the ``accelerate launch`` command that ``mmfw`` would run
    (:func:`mmfw.cli.train._launch`), with ``train_driver.py`` in every process (so that ``driver_env`` hooks apply).
    Saves the startup of the ``mmfw`` process that only launches the others."""
    from mmfw.cli import train
    from mmfw.cli.main import build_parser
    from tests.training.train_driver import driver_command

    calls: list[tuple[list[str], dict[str, str]]] = []
    env = {"OMP_NUM_THREADS": "1", "MMFW_DISABLE_PLUGIN_AUTOLOAD": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""), **(driver_env or {})}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.delenv("LOCAL_RANK", raising=False)
        mp.setattr(subprocess, "call", lambda cmd, env: calls.append((cmd, env)) or 0)
        assert train._launch(build_parser().parse_args(args)) == 0
    (cmd, launch_env), = calls
    proc = subprocess.run(driver_command(cmd), env=launch_env, cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"mmfw {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-6000:]}")
    return proc
