"""Resume stays exact with train-time augmentation (``data.augment``) on: a run SIGKILLed mid-training and resumed
ends with the weights of the uninterrupted run, bit for bit. The resumed part crosses an epoch boundary (6
micro-batches per epoch, accumulation 2), so it also draws the next epoch's augmentations; the vision encoder is
trained, so a different augmentation would change the weights. Evaluation images are never augmented."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
import torch

from mmfw.config import load_config_dict
from mmfw.training.checkpoint import checkpoint_dirs
from mmfw.training.trainer import Trainer
from tests.training.conftest import run_mmfw, tiny_experiment_dict, write_config
from tests.training.test_resume import _differing, _weights

pytestmark = pytest.mark.slow

AUGMENT = {"random_resized_crop": {"scale": [0.5, 1.0]}, "color_jitter": {"brightness": 0.4, "contrast": 0.4},
           "rand_augment": {"num_ops": 2, "magnitude": 9}}


def _config(tokenizer_dir, synth_data, small_train, run_dir: Path, augment: dict | None = AUGMENT) -> dict:
    exp = tiny_experiment_dict(tokenizer_dir, synth_data, small_train, run_dir)
    exp["data"]["eval"] = []
    exp["data"]["augment"] = augment
    exp["training"].update(max_steps=6, save_every=2, keep_last=2, log_every=2, gradient_accumulation_steps=2,
                           learning_rate=1e-2)
    return exp


def _train_in_process(cfg_dict: dict, registries) -> Trainer:
    torch.set_num_threads(1)
    trainer = Trainer(load_config_dict(cfg_dict, registries), registries, progress=False)
    trainer.train()
    return trainer


@pytest.fixture(scope="module")
def reference(tokenizer_dir, synth_data, small_train, tmp_path_factory, registries) -> tuple[Path, Trainer]:
    run_dir = tmp_path_factory.mktemp("aug-reference") / "run"
    return run_dir, _train_in_process(_config(tokenizer_dir, synth_data, small_train, run_dir), registries)


def test_resume_with_augmentation_is_bit_identical(reference, tokenizer_dir, synth_data, small_train,
                                                   tmp_path, registries) -> None:
    run_dir = tmp_path / "run"
    cfg = write_config(_config(tokenizer_dir, synth_data, small_train, run_dir), tmp_path / "exp.yaml")
    marker = tmp_path / "stalled"
    proc = run_mmfw(["-q", "train", str(cfg), "--no-progress"], wait=False,
                    driver_env={"DRIVER_STALL_AFTER_CHECKPOINT": "2", "DRIVER_MARKER": str(marker)})
    deadline = time.time() + 240
    while not marker.exists():
        assert proc.poll() is None, f"training ended before the kill:\n{proc.stdout.read()[-3000:]}"
        assert time.time() < deadline, "no checkpoint within the time limit"
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert [p.name for p in checkpoint_dirs(run_dir)] == ["step-2"]
    out = run_mmfw(["train", str(run_dir), "--no-progress"])
    assert "resumed stage 'train'" in out.stderr and "step 2" in out.stderr
    ref_dir, _ = reference
    assert _differing(_weights(run_dir / "model"), _weights(ref_dir / "model")) == []


def test_augmentation_changes_training_and_never_touches_eval(reference, tokenizer_dir, synth_data, small_train,
                                                              tmp_path, registries) -> None:
    ref_dir, trainer = reference
    assert trainer.train_set.augment is not None and trainer.train_set.augment.epoch == 1  # epochs 0 and 1 were drawn
    exp = _config(tokenizer_dir, synth_data, small_train, tmp_path / "plain", augment=None)
    plain = _train_in_process(exp, registries)
    assert plain.train_set.augment is None
    differ = _differing(_weights(tmp_path / "plain" / "model"), _weights(ref_dir / "model"))
    assert any(k.startswith("vision_encoder.") for k in differ)
    exp = _config(tokenizer_dir, synth_data, small_train, tmp_path / "with-eval")
    exp["data"]["eval"] = [{"path": str(synth_data.eval)}]
    exp["training"]["max_steps"] = 1
    with_eval = _train_in_process(exp, registries)
    eval_set = getattr(with_eval.eval_set, "dataset", with_eval.eval_set)  # a Subset with data.eval_max_samples
    assert with_eval.train_set.augment is not None and eval_set.augment is None
