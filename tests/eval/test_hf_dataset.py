"""The eval set as a Hugging Face ``datasets`` folder (what lmms-eval's local tasks load)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mmfw.data.errors import DataError
from mmfw.eval.hf_dataset import eval_columns


def test_columns_follow_the_eval_records(synth_data) -> None:
    records = json.loads(Path(synth_data.eval).read_text())
    cols = eval_columns(synth_data.eval, limit=5)
    assert cols["id"] == [r["id"] for r in records[:5]]
    assert cols["question"] == [r["conversations"][0]["value"].replace("<image>\n", "") for r in records[:5]]
    assert cols["answer"] == [r["conversations"][1]["value"] for r in records[:5]]
    assert cols["task"] == [r["task"] for r in records[:5]]
    first = Path(synth_data.eval).parent / records[0]["image"]
    assert cols["image"][0] == {"bytes": first.read_bytes(), "path": first.name}


def test_multi_turn_record_is_refused_with_its_location(tmp_path: Path, synth_data) -> None:
    record = json.loads(Path(synth_data.eval).read_text())[0]
    record["conversations"] = record["conversations"] * 2
    record["conversations"][2]["value"] = "And again?"
    path = tmp_path / "eval.json"
    path.write_text(json.dumps([record]))
    with pytest.raises(DataError, match=r"eval.json\[0\]: record 'eval_000000' has 2 question\(s\) and 1 image"):
        eval_columns(path, image_root=Path(synth_data.eval).parent)


def test_written_folder_loads_back(tmp_path: Path, synth_data) -> None:
    datasets = pytest.importorskip("datasets")
    from mmfw.eval.hf_dataset import write_hf_dataset

    out = write_hf_dataset(synth_data.eval, tmp_path / "hf", limit=4)
    ds = datasets.load_from_disk(str(out))["test"]
    assert ds.num_rows == 4 and ds[0]["image"].size == (32, 32) and ds[0]["id"] == "eval_000000"
