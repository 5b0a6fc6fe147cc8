"""SIGTERM / Ctrl-C during an evaluation: the evaluation ends at its next batch (it does not run to the end), the
run stops with a checkpoint of the step and says so, and ``--resume`` ends with the weights of an uninterrupted run."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import mmfw.training.evaluate as evaluate
from mmfw.config import load_config_dict
from mmfw.training.checkpoint import checkpoint_dirs
from mmfw.training.signals import StopRequest, TrainingInterrupted
from mmfw.training.trainer import Trainer


def _exp(tiny_experiment: dict[str, Any], run: Path) -> dict[str, Any]:
    exp = copy.deepcopy(tiny_experiment)
    exp["output_dir"] = str(run)
    exp["data"]["eval_max_samples"] = 16
    exp["training"].update(max_steps=4, eval_every=2, save_every=2, log_every=1, trackers=[], eval_batch_size=4,
                           max_new_tokens=2)
    return exp


def _train(exp: dict[str, Any], registries: Any, stop: StopRequest | None = None, resume: bool = False) -> None:
    trainer = Trainer(load_config_dict(exp, registries), registries, progress=False, resume=resume)
    trainer.stop = stop
    trainer.train()


def test_a_stop_during_evaluation_ends_it_and_resume_is_exact(tiny_experiment, registries, tmp_path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    _train(_exp(tiny_experiment, tmp_path / "ref"), registries)
    reference = load_file(str(tmp_path / "ref" / "model" / "model.safetensors"))

    stop, generated = StopRequest(), []
    real_loss, real_record = evaluate.evaluate_loss, evaluate.prediction_record

    def loss_then_signal(*args: Any, **kwargs: Any) -> float:
        value = real_loss(*args, **kwargs)
        stop.signal = "SIGTERM"  # arrives after the eval loss, before the first generation batch
        return value

    monkeypatch.setattr(evaluate, "evaluate_loss", loss_then_signal)
    monkeypatch.setattr(evaluate, "prediction_record", lambda *a, **k: generated.append(1) or real_record(*a, **k))
    run = tmp_path / "run"
    exp = _exp(tiny_experiment, run)
    with pytest.raises(TrainingInterrupted) as stopped:
        _train(exp, registries, stop)
    assert generated == []  # none of the 16 eval questions was answered after the signal
    assert not (run / "predictions.jsonl").exists()
    ckpts = checkpoint_dirs(run)
    assert [c.name for c in ckpts] == ["step-2"]
    assert "stopped by SIGTERM after step 2 of 4" in str(stopped.value) and "--resume" in str(stopped.value)

    monkeypatch.setattr(evaluate, "evaluate_loss", real_loss)
    _train(exp, registries, StopRequest(), resume=True)
    weights = load_file(str(run / "model" / "model.safetensors"))
    assert weights.keys() == reference.keys()
    assert [k for k in weights if not torch.equal(weights[k], reference[k])] == []
