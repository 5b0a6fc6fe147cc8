"""Training on a streamed dataset: a run resumed from a mid-epoch checkpoint ends with the uninterrupted run's
weights, bit for bit (mmfw.data.stream through mmfw.training.trainer; two DataLoader workers, resumed at an odd
batch so that the workers change turns)."""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from mmfw.config import load_config_dict
from mmfw.data.convert import convert_to_webdataset
from mmfw.training.trainer import Trainer


def test_resumed_streamed_run_matches_the_uninterrupted_one(tiny_experiment, synth_data, registries, tmp_path):
    convert_to_webdataset(synth_data.train, tmp_path / "wds", shard_size=16)
    exp = tiny_experiment
    exp["data"]["train"] = [{"path": str(tmp_path / "wds")}]
    exp["data"]["eval"] = []
    exp["data"]["stream"] = {"shuffle_buffer": 8}
    exp["training"].update(max_steps=6, save_every=3, batch_size=4, group_by_length=True, num_workers=2)
    torch.set_num_threads(1)

    def run(name: str, resume: bool = False) -> Path:
        exp["output_dir"] = str(tmp_path / name)
        Trainer(load_config_dict(exp, registries), registries, progress=False, resume=resume).train()
        return tmp_path / name / "model" / "model.safetensors"

    reference = load_file(str(run("a")))
    run("b")
    shutil.rmtree(tmp_path / "b" / "model")  # as if the run had stopped after the step-3 checkpoint
    assert (tmp_path / "b" / "checkpoints" / "step-3" / "stream-0.json").is_file()
    resumed = load_file(str(run("b", resume=True)))
    assert reference.keys() == resumed.keys()
    assert [k for k in reference if not torch.equal(reference[k], resumed[k])] == []
