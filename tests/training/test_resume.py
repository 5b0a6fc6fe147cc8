"""Resume is exact: a run SIGKILLed mid-training, then again while writing a checkpoint, and resumed, ends with the
weights of the uninterrupted run, bit for bit.

The run has two stages (the first finishes before the first kill and must not be trained again), LoRA with dropout
(so the RNG state matters), gradient accumulation, and 6 micro-batches per epoch so the resumed part crosses epoch
boundaries. The kills happen in subprocesses (``train_driver.py``); the reference run is trained in-process on the same
single thread.
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from mmfw.config import load_config_dict
from mmfw.model.io import load_model_dir
from mmfw.training.checkpoint import checkpoint_dirs, read_trainer_state
from mmfw.training.trainer import Trainer
from tests.training.conftest import run_mmfw, tiny_experiment_dict, write_config

pytestmark = pytest.mark.slow


def _config(tokenizer_dir, synth_data, small_train, run_dir: Path) -> dict:
    exp = tiny_experiment_dict(tokenizer_dir, synth_data, small_train, run_dir)
    exp["data"]["eval"] = []
    exp["training"].update(save_every=3, keep_last=2, log_every=3)
    exp["stages"] = [
        {"name": "align", "max_steps": 2, "policy": {"vision_encoder": "frozen", "llm": "frozen"}},
        {"name": "finetune", "max_steps": 9, "gradient_accumulation_steps": 2, "learning_rate": 1e-2,
         "policy": {"llm": {"type": "lora", "r": 4, "dropout": 0.2, "target_modules": ["q_proj", "v_proj"]}}},
    ]
    return exp


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    out = load_file(str(model_dir / "model.safetensors"))
    for adapter in sorted((model_dir / "adapters").glob("*/adapter_model.safetensors")):
        out.update({f"{adapter.parent.name}:{k}": v for k, v in load_file(str(adapter)).items()})
    return out


def _differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not torch.equal(a[k], b[k])]


@pytest.fixture(scope="module")
def reference(tokenizer_dir, synth_data, small_train, tmp_path_factory, registries) -> Path:
    """The uninterrupted run (in-process, one thread like the subprocesses)."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    torch.set_num_threads(1)
    cfg = load_config_dict(_config(tokenizer_dir, synth_data, small_train, run_dir), registries)
    Trainer(cfg, registries, progress=False).train()
    return run_dir


@pytest.fixture(scope="module")
def interrupted(tokenizer_dir, synth_data, small_train, tmp_path_factory, registries) -> dict[str, Any]:
    """Kill mid-training, resume and kill mid-save, resume to the end; what was on disk after each kill."""
    root = tmp_path_factory.mktemp("interrupted")
    run_dir = root / "run"
    cfg = write_config(_config(tokenizer_dir, synth_data, small_train, run_dir), root / "exp.yaml")
    facts: dict[str, Any] = {"run_dir": run_dir}
    ckpts = run_dir / "stages" / "finetune" / "checkpoints"

    marker = root / "stalled"
    proc = run_mmfw(["-q", "train", str(cfg), "--no-progress"], wait=False,
                    driver_env={"DRIVER_STALL_AFTER_CHECKPOINT": "3", "DRIVER_MARKER": str(marker)})
    deadline = time.time() + 240
    while not marker.exists():
        assert proc.poll() is None, f"training ended before the kill:\n{proc.stdout.read()[-3000:]}"
        assert time.time() < deadline, "no checkpoint within the time limit"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    facts["kill1"] = {"returncode": proc.returncode, "checkpoints": [p.name for p in checkpoint_dirs(ckpts.parent)],
                      "step": read_trainer_state(ckpts / "step-3")["global_step"],
                      "final_model": (run_dir / "model").exists(),
                      "align_done_mtime": (run_dir / "stages/align/model/stage.json").stat().st_mtime_ns}

    proc = run_mmfw(["-q", "train", str(cfg), "--resume", "--no-progress"], check=False,
                    driver_env={"DRIVER_KILL_DURING_SAVE": "6"})
    model, _, loaded_cfg = load_model_dir(ckpts / "step-3", registries)
    facts["kill2"] = {"returncode": proc.returncode, "checkpoints": [p.name for p in checkpoint_dirs(ckpts.parent)],
                      "half_written": (ckpts / ".step-6.tmp" / "model.safetensors").exists(),
                      "step3_loads": loaded_cfg.name == "tiny" and all(torch.isfinite(p).all()
                                                                       for p in model.parameters())}

    out = run_mmfw(["train", str(run_dir), "--no-progress"])  # a run directory: resumes it
    facts["resume"] = {"stderr": out.stderr, "checkpoints": [p.name for p in checkpoint_dirs(ckpts.parent)],
                       "stale": sorted(p.name for p in ckpts.glob(".step-*")),
                       "align_done_mtime": (run_dir / "stages/align/model/stage.json").stat().st_mtime_ns}
    return facts


def test_sigkill_mid_training_leaves_the_last_checkpoint(interrupted) -> None:
    k = interrupted["kill1"]
    assert k["returncode"] == -signal.SIGKILL
    assert k["checkpoints"] == ["step-3"] and k["step"] == 3
    assert not k["final_model"]


def test_kill_during_checkpoint_save_keeps_previous_checkpoint_loadable(interrupted) -> None:
    k = interrupted["kill2"]
    assert k["returncode"] == -signal.SIGKILL
    assert k["checkpoints"] == ["step-3"]  # the half-written step-6 is never listed
    assert k["half_written"]
    assert k["step3_loads"]


def test_resumed_run_is_bit_identical_and_skips_finished_stage(interrupted, reference) -> None:
    run_dir, r = interrupted["run_dir"], interrupted["resume"]
    assert "stage 'align' already finished" in r["stderr"]
    assert "resumed stage 'finetune'" in r["stderr"] and "step 3" in r["stderr"]
    assert r["align_done_mtime"] == interrupted["kill1"]["align_done_mtime"]
    assert r["checkpoints"] == ["step-3", "step-6"] and r["stale"] == []
    assert _differing(_weights(run_dir / "model"), _weights(reference / "model")) == []
    assert _differing(_weights(run_dir / "stages/align/model"), _weights(reference / "stages/align/model")) == []
    # and the run really trained: the adapters moved away from their zero initialisation
    lora_b = [v for k, v in _weights(reference / "model").items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)
    final = json.loads((run_dir / "metrics.json").read_text())
    assert final["run"]["steps"] == 9 and set(final["stages"]) == {"align", "finetune"}
