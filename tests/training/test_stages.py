"""Two stages in one run: align (connector only, length-grouped), then LoRA fine-tuning (packed rows) that starts
from the align result; finished stages are not trained again; a run directory is never silently overwritten;
metrics go to metrics.jsonl and tensorboard."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from accelerate.utils import set_seed
from safetensors.torch import load_file

from mmfw.config import load_config_dict
from mmfw.model.builder import build_model
from mmfw.training.errors import RunExistsError
from mmfw.training.trainer import Trainer
from tests.training.conftest import tiny_experiment_dict

pytestmark = pytest.mark.slow


def _two_stage(tokenizer_dir, synth_data, small_train, run_dir) -> dict:
    exp = tiny_experiment_dict(tokenizer_dir, synth_data, small_train, run_dir)
    exp["training"].update(trackers=["tensorboard"], log_every=1)
    exp["stages"] = [
        {"name": "align", "max_steps": 3, "learning_rate": 1e-2, "group_by_length": True,
         "policy": {"vision_encoder": "frozen", "connector": "full", "llm": "frozen"}},
        {"name": "finetune", "max_steps": 3, "packing": True, "pack_length": 192, "batch_size": 2,
         "policy": {"vision_encoder": "frozen", "llm": {"type": "lora", "r": 4, "dropout": 0.0}}},
    ]
    return exp


@pytest.fixture(scope="module")
def two_stage(tokenizer_dir, synth_data, small_train, tmp_path_factory, registries):
    pytest.importorskip("tensorboard")
    run_dir = tmp_path_factory.mktemp("stages") / "run"
    cfg = load_config_dict(_two_stage(tokenizer_dir, synth_data, small_train, run_dir), registries)
    metrics = Trainer(cfg, registries, progress=False).train()
    return cfg, run_dir, metrics


def _part(state: dict, prefix: str) -> dict:
    return {k: v for k, v in state.items() if k.startswith(prefix)}


def test_align_trains_only_the_connector_and_finetune_starts_from_it(two_stage, registries) -> None:
    cfg, run_dir, _ = two_stage
    set_seed(cfg.seed)  # the trainer's initialisation of stage 0
    init = build_model(cfg.model, registries)[0].state_dict()
    align = load_file(str(run_dir / "stages/align/model/model.safetensors"))
    final = load_file(str(run_dir / "model/model.safetensors"))
    for prefix in ("vision_encoder.", "llm."):
        assert all(torch.equal(align[k], init[k]) for k in _part(init, prefix)), prefix
    assert any(not torch.equal(align[k], init[k]) for k in _part(init, "connector."))
    # finetune: encoder frozen, LLM base weights frozen (the LoRA adapters carry the change), connector trained
    for prefix in ("vision_encoder.", "llm."):
        assert all(torch.equal(final[k], align[k]) for k in _part(align, prefix)), prefix
    assert any(not torch.equal(final[k], align[k]) for k in _part(align, "connector."))
    assert (run_dir / "model/adapters/llm/adapter_model.safetensors").exists()
    assert not (run_dir / "stages/align/model/adapters").exists()
    record = json.loads((run_dir / "stages/align/model/stage.json").read_text())
    assert record["trainable_parameters"]["total"] == record["trainable_parameters"]["connector"] > 0


def test_metrics_cover_both_stages(two_stage) -> None:
    _, run_dir, metrics = two_stage
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if "train/loss" in r]
    assert [(r["stage"], r["step"]) for r in train] == [("align", 1), ("align", 2), ("align", 3),
                                                         ("finetune", 1), ("finetune", 2), ("finetune", 3)]
    packed = [r["train/token_efficiency"] for r in train if r["stage"] == "finetune"]
    assert min(packed) > 0.9  # three ~55-token samples per 192-token row, rows of similar load batched together
    assert {r["stage"] for r in records if "eval/loss" in r} == {"align", "finetune"}
    final = json.loads((run_dir / "metrics.json").read_text())
    assert set(final["stages"]) == {"align", "finetune"} and final["run"]["steps"] == 3
    assert final["eval"]["loss"] == pytest.approx(metrics["eval/loss"])
    assert list((run_dir / "tensorboard").rglob("events.out.tfevents.*"))


def test_finished_stages_are_not_trained_again(two_stage, registries, caplog) -> None:
    cfg, run_dir, metrics = two_stage
    caplog.set_level(logging.INFO, logger="mmfw.training.trainer")
    stamps = {p: p.stat().st_mtime_ns for p in (run_dir / "stages/align/model/stage.json", run_dir / "model/stage.json")}
    with pytest.raises(RunExistsError, match="pass --resume to continue it or --overwrite"):
        Trainer(cfg, registries, progress=False).train()
    again = Trainer(cfg, registries, progress=False, resume=True).train()
    assert again == metrics
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert "stage 'align' already finished" in caplog.text and "stage 'finetune' already finished" in caplog.text
