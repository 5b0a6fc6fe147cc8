"""Multi-process training through Accelerate: ``mmfw train --num-processes 2`` runs DDP on CPU (gloo) and matches a
one-process run with the same global batch.

Why the match is tight: the batch order depends only on (seed, epoch) and Accelerate gives process ``i`` the
micro-batches ``i, i+2, ...``, so the two batches of 4 of a 2-process step hold exactly the samples of the 1-process
batch of 8; and the loss of a step is the sum of token losses divided by the supervised tokens of the whole step
(both processes), so the DDP-averaged gradient equals the 1-process gradient. What remains is float32 summation order
(the gloo all-reduce, rows padded to a different width): about 1e-7 relative on the loss. AdamW divides by
sqrt(second moment), which turns such differences into at most ~lr * 1e-3 on the weights over a few steps, hence
the 1e-4 bound on the weights after 4 steps at lr 3e-3.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from mmfw.config import load_config_dict
from mmfw.training.trainer import Trainer
from tests.training.conftest import run_mmfw, write_config


def _losses(run_dir: Path) -> list[float]:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in records if "train/loss" in r]


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_same_global_batch(experiment, registries, tmp_path) -> None:
    experiment["data"]["eval"] = []
    experiment["training"]["policy"] = {"vision_encoder": "full", "llm": {"type": "lora", "r": 4, "dropout": 0.0}}
    two = dict(experiment, output_dir=str(tmp_path / "two"))
    two["training"] = {**experiment["training"], "batch_size": 4}
    proc = run_mmfw(["train", str(write_config(two, tmp_path / "two.yaml")), "--num-processes", "2",
                     "--no-progress"])
    assert "batch 4 x accumulation 1 x 2 process(es)" in proc.stderr

    one = dict(experiment, output_dir=str(tmp_path / "one"))
    one["training"] = {**experiment["training"], "batch_size": 8}
    Trainer(load_config_dict(one, registries), registries, progress=False).train()

    l1, l2 = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    assert len(l1) == len(l2) == 4
    assert l2 == pytest.approx(l1, rel=1e-5)
    w1 = load_file(str(tmp_path / "one/model/model.safetensors"))
    w2 = load_file(str(tmp_path / "two/model/model.safetensors"))
    a1 = load_file(str(tmp_path / "one/model/adapters/llm/adapter_model.safetensors"))
    a2 = load_file(str(tmp_path / "two/model/adapters/llm/adapter_model.safetensors"))
    for a, b in ((w1, w2), (a1, a2)):
        assert a.keys() == b.keys()
        assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    assert all(v.abs().sum() > 0 for k, v in a1.items() if "lora_B" in k)  # the adapters did train


@pytest.mark.parametrize("name", ["ddp", "ddp-2nodes", "fsdp", "deepspeed-zero2", "deepspeed-zero3"])
def test_shipped_accelerate_configs_load(name) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    path = Path(__file__).resolve().parents[2] / "configs" / "accelerate" / f"{name}.yaml"
    cfg = load_config_from_file(str(path))
    expected = {"ddp": "MULTI_GPU", "ddp-2nodes": "MULTI_GPU", "fsdp": "FSDP", "deepspeed-zero2": "DEEPSPEED",
                "deepspeed-zero3": "DEEPSPEED"}[name]
    assert cfg.distributed_type.value == expected
    if name == "fsdp":
        assert cfg.fsdp_config["fsdp_use_orig_params"] is True  # frozen + trained parameters in one model
    if name.startswith("deepspeed"):
        assert cfg.deepspeed_config["zero_stage"] == int(name[-1])


def test_num_processes_relaunches_through_accelerate(monkeypatch, tmp_path, experiment) -> None:
    import subprocess

    from mmfw.cli.main import main

    calls = []
    monkeypatch.setattr(subprocess, "call", lambda cmd, env: calls.append((cmd, env)) or 0)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    cfg = write_config(experiment, tmp_path / "exp.yaml")
    assert main(["train", str(cfg), "--num-processes", "3", "--set", "training.max_steps=2", "--resume"]) == 0
    (cmd, env), = calls
    launch = cmd[cmd.index("accelerate.commands.launch"):]
    assert launch[:4] == ["accelerate.commands.launch", "--multi_gpu", "--num_processes", "3"]
    assert cmd[cmd.index("-m", 3):] == ["-m", "mmfw", "train", str(cfg), "--set", "training.max_steps=2", "--resume"]
    assert env["ACCELERATE_USE_CPU"] == "1"  # no CUDA here: gloo
