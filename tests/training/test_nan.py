"""A non-finite loss stops training with a message naming the step (the update is not applied, the last good
checkpoint is kept); with ``max_bad_steps`` such steps are skipped and counted instead."""

from __future__ import annotations

import json

import pytest
import torch

from mmfw.cli.main import main
from mmfw.config import load_config_dict
from mmfw.model.io import load_model_dir
from mmfw.training import step as step_module
from mmfw.training.checkpoint import checkpoint_dirs
from mmfw.training.errors import NonFiniteLossError
from mmfw.training.trainer import Trainer
from tests.training.conftest import write_config


@pytest.fixture
def nan_at_step_3(monkeypatch):
    """The loss of the 3rd micro-batch (step 3, no accumulation) is NaN."""
    calls = {"n": 0}
    original = step_module.token_loss_sum

    def loss(logits, labels, positions=None):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        value = original(logits, labels, positions)
        return value * float("nan") if calls["n"] == 3 else value

    monkeypatch.setattr(step_module, "token_loss_sum", loss)
    return calls


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(experiment, registries, nan_at_step_3,
                                                                         tmp_path) -> None:
    experiment["data"]["eval"] = []
    experiment["training"].update(max_steps=6, save_every=2)
    cfg = load_config_dict(experiment, registries)
    with pytest.raises(NonFiniteLossError) as err:
        Trainer(cfg, registries, progress=False).train()
    message = str(err.value)
    run_dir = cfg.run_dir
    assert "non-finite loss (nan) at step 3 of stage 'train'" in message
    assert str(run_dir / "checkpoints" / "step-2") in message and "max_bad_steps" in message
    assert [p.name for p in checkpoint_dirs(run_dir)] == ["step-2"]
    model, _, _ = load_model_dir(run_dir / "checkpoints" / "step-2", registries)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert not (run_dir / "model").exists()


def test_bad_steps_within_the_budget_are_skipped_and_counted(experiment, registries, nan_at_step_3) -> None:
    experiment["data"]["eval"] = []
    experiment["training"].update(max_steps=5, max_bad_steps=1)
    cfg = load_config_dict(experiment, registries)
    metrics = Trainer(cfg, registries, progress=False).train()
    records = [json.loads(line) for line in (cfg.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["train/bad_steps"]) for r in records if "train/bad_steps" in r] == [(3, 1)]
    logged = [r["step"] for r in records if "train/loss" in r]
    assert logged == [1, 2, 4, 5]  # the skipped step has no loss to report
    assert metrics["run/steps"] == 5
    model, _, _ = load_model_dir(cfg.run_dir, registries)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_cli_reports_the_nan_stop_in_one_line(experiment, nan_at_step_3, tmp_path, capsys) -> None:
    experiment["data"]["eval"] = []
    experiment["training"].update(max_steps=4)
    cfg = write_config(experiment, tmp_path / "exp.yaml")
    assert main(["-q", "train", str(cfg), "--no-progress"]) == 2  # not a bug: the run's numbers (exit 1 is for bugs)
    err = capsys.readouterr().err
    assert "non-finite loss (nan) at step 3 of stage 'train'" in err and "Traceback" not in err
