"""Streamed training with 2 processes x 2 DataLoader workers (``mmfw train --num-processes 2``, gloo on CPU), from a
WebDataset source and a Hugging Face source together: over one epoch the two processes train on every record exactly
once, and a run resumed from its step-3 checkpoint trains on the same batches as the uninterrupted run and ends with
its weights, bit for bit.

Layout: 32 records, 16 in 2 WebDataset shards of 8, 16 in a Hugging Face dataset read in shards of 8 rows: 4 shards
dealt to the 4 streams (2 processes x 2 workers), 2 length-grouped batches of 4 per stream and epoch, so an epoch is
4 steps per process. The run takes 6 steps (into the second epoch) and checkpoints at step 3, where a process's two
workers are out of turn (one has finished its window, the other is half way through its own).
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from mmfw.data.convert import convert_to_hf, convert_to_webdataset
from tests.training.conftest import launch_ranks, write_config


def _batches(directory: Path, rank: int) -> dict[int, list[str]]:
    lines = (directory / f"batches-{rank}.jsonl").read_text().splitlines()
    return {r["batch"]: r["ids"] for r in map(json.loads, lines)}


@pytest.mark.slow
def test_two_process_stream_reads_each_record_once_per_epoch_and_resumes_exactly(experiment, synth_data, tmp_path):
    records = json.loads(Path(synth_data.train).read_text())[:32]
    images = Path(synth_data.train).parent
    (tmp_path / "a.json").write_text(json.dumps(records[:16]))
    (tmp_path / "b.json").write_text(json.dumps(records[16:]))
    assert convert_to_webdataset(tmp_path / "a.json", tmp_path / "wds", shard_size=8, image_root=images)["shards"] \
        == {"shard-000000.tar": 8, "shard-000001.tar": 8}
    assert convert_to_hf(tmp_path / "b.json", tmp_path / "hf")["records"] == 16
    experiment["data"]["train"] = [{"path": str(tmp_path / "wds")},
                                   {"path": str(tmp_path / "hf"), "format": "hf", "image_root": str(images)}]
    experiment["data"]["eval"] = []
    experiment["data"]["stream"] = {"shuffle_buffer": 4, "hf_shard_rows": 8}
    experiment["training"].update(max_steps=6, save_every=3, batch_size=4, group_by_length=True, num_workers=2)
    cfg = write_config(experiment, tmp_path / "exp.yaml")
    run_dir = Path(experiment["output_dir"])

    first = launch_ranks(["train", str(cfg), "--num-processes", "2", "--no-progress"],
                         driver_env={"DRIVER_RECORD_BATCHES": str(tmp_path)})
    assert "32 examples, batch 4 x accumulation 1 x 2 process(es)" in first.stderr
    seen = {rank: _batches(tmp_path, rank) for rank in (0, 1)}
    assert all(sorted(seen[rank]) == [1, 2, 3, 4, 5, 6] for rank in (0, 1))
    assert all(len(ids) == 4 for rank in (0, 1) for ids in seen[rank].values())
    ids = [str(r["id"]) for r in records]
    epoch_0 = Counter(i for rank in (0, 1) for b in (1, 2, 3, 4) for i in seen[rank][b])
    assert epoch_0 == Counter(ids)  # every record once: none twice, none lost
    epoch_1 = Counter(i for rank in (0, 1) for b in (5, 6) for i in seen[rank][b])
    assert set(epoch_1) <= set(ids) and max(epoch_1.values()) == 1 and sum(epoch_1.values()) == 16
    step_3 = run_dir / "checkpoints" / "step-3"
    positions = {rank: json.loads((step_3 / f"stream-{rank}.json").read_text()) for rank in (0, 1)}
    assert all((p["consumed"], p["processes"], p["workers"]) == (3, 2, 2) for p in positions.values())
    reference = load_file(str(run_dir / "model" / "model.safetensors"))

    shutil.rmtree(run_dir / "model")  # as if the run had stopped after the step-3 checkpoint
    (tmp_path / "resumed").mkdir()
    second = launch_ranks(["train", str(cfg), "--num-processes", "2", "--no-progress", "--resume"],
                          driver_env={"DRIVER_RECORD_BATCHES": str(tmp_path / "resumed")})
    assert "step 3" in second.stderr
    for rank in (0, 1):
        assert _batches(tmp_path / "resumed", rank) == {b: seen[rank][b] for b in (4, 5, 6)}
    resumed = load_file(str(run_dir / "model" / "model.safetensors"))
    assert reference.keys() == resumed.keys()
    assert [k for k in reference if not torch.equal(reference[k], resumed[k])] == []
