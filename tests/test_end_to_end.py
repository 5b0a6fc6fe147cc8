"""End to end: train a tiny config, watch the loss fall, reload the run and get identical logits and answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from mmfw.cli.main import main
from mmfw.config import load_config_dict
from mmfw.data.collator import VLMCollator
from mmfw.data.dataset import LlavaDataset
from mmfw.inference import load_pipeline
from mmfw.model.io import load_model_dir
from mmfw.training.trainer import Trainer


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, registries, synth_data, tiny_model) -> tuple[Trainer, Path]:
    model = tiny_model
    run_dir = tmp_path_factory.mktemp("e2e") / "run"
    exp = {
        "name": "e2e", "seed": 0, "output_dir": str(run_dir), "model": model,
        "data": {"train": [{"path": str(synth_data.train)}], "eval": [{"path": str(synth_data.eval)}],
                 "max_length": 96, "eval_max_samples": 16},
        "training": {"max_steps": 40, "batch_size": 16, "learning_rate": 3e-3, "warmup_ratio": 0.1, "log_every": 5,
                     "save_every": 20, "keep_last": 1, "policy": {"vision_encoder": "full"}, "max_new_tokens": 4},
    }
    cfg = load_config_dict(exp, registries)
    trainer = Trainer(cfg, registries, progress=False)
    trainer.train()
    return trainer, run_dir


def test_loss_falls_and_run_directory_is_complete(trained_run) -> None:
    _, run_dir = trained_run
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in records if "train/loss" in r]
    assert len(losses) == 8
    assert losses[-1] < 0.6 * losses[0], losses
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.0 <= metrics["eval"]["accuracy"] <= 1.0 and metrics["eval"]["num_samples"] == 16
    assert metrics["run"]["steps"] == 40
    for name in ("config.yaml", "model/model.safetensors", "model/config.yaml", "model/tokenizer/tokenizer.json"):
        assert (run_dir / name).exists(), name
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["step-20"]


def test_reloaded_model_gives_identical_logits(trained_run, registries) -> None:
    trainer, run_dir = trained_run
    live = trainer.accelerator.unwrap_model(trainer.model).eval()
    loaded, tokenizer, cfg = load_model_dir(run_dir, registries)
    assert cfg == trainer.cfg
    ds = LlavaDataset(cfg.data.eval, tokenizer, loaded.image_strategy, image_token="<image>", max_length=96)
    batch = VLMCollator(tokenizer.pad_token_id)([ds[i] for i in range(4)])
    inputs = batch.model_inputs()
    with torch.no_grad():
        a, b = live(**inputs).logits, loaded(**inputs).logits
    assert torch.equal(a, b)


def test_checkpoint_loads_and_differs_from_final(trained_run, registries) -> None:
    trainer, run_dir = trained_run
    ckpt, _, _ = load_model_dir(run_dir / "checkpoints" / "step-20", registries)
    final, _, _ = load_model_dir(run_dir, registries)
    w_ckpt = ckpt.connector.state_dict()
    w_final = final.connector.state_dict()
    assert any(not torch.equal(w_ckpt[k], w_final[k]) for k in w_final)


def test_generate_cli_matches_python_api(trained_run, synth_data, capsys) -> None:
    _, run_dir = trained_run
    record = json.loads(Path(synth_data.eval).read_text())[0]
    image = str(Path(synth_data.eval).parent / record["image"])
    question = record["conversations"][0]["value"].replace("<image>\n", "")
    assert main(["-q", "generate", str(run_dir), "--image", image, "--prompt", question, "--max-new-tokens", "4"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == load_pipeline(run_dir).generate(image, question, max_new_tokens=4)


def test_resolved_config_reproduces_the_run(trained_run, registries, tmp_path) -> None:
    trainer, run_dir = trained_run
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert load_config_dict(saved, registries) == trainer.cfg
