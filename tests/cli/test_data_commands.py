"""``mmfw data check`` statistics and ``mmfw data show`` output on good data."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from PIL import Image

from mmfw.cli.main import main


def run(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def conversation(n_turns: int, image: bool = True) -> list[dict[str, str]]:
    turns = []
    for k in range(n_turns):
        question = ("<image>\n" if image and k == 0 else "") + f"What is the shape number {k}?"
        turns += [{"from": "human", "value": question}, {"from": "gpt", "value": f"red {k}"}]
    return turns


@pytest.fixture
def experiment(tiny_experiment: dict, tmp_path: Path):
    def make(max_length: int, truncation: str = "drop-turns") -> Path:
        d = tmp_path / "d"
        d.mkdir(exist_ok=True)
        Image.new("RGBA", (40, 20), (0, 200, 0, 255)).save(d / "a.png")
        records = [{"id": f"r{n}", "image": "a.png", "conversations": conversation(n)} for n in (1, 2, 3)]
        records.append({"id": "text", "conversations": conversation(2, image=False)})
        (d / "train.json").write_text(json.dumps(records), encoding="utf-8")
        cfg = copy.deepcopy(tiny_experiment)
        cfg["data"] = {"train": [{"path": str(d / "train.json")}], "max_length": max_length,
                       "truncation": truncation}
        path = tmp_path / "exp.yaml"
        path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
        return path

    return make


def test_check_reports_lengths_and_truncation(experiment, capsys) -> None:
    code, out, err = run(["data", "check", str(experiment(128))], capsys)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0] == "data.train: 4 records, 4 usable"
    assert lines[1] == "  tokens per sample (text + image): min 56, median 95, p90 134, p99 134, max 134 (4 samples)"
    assert lines[-1] == "  longer than data.max_length 128: 1 (data.truncation drop-turns: 1 shortened)"
    # a shorter max_length shortens every multi-turn sample by whole turns
    code, out, err = run(["data", "check", str(experiment(60))], capsys)
    assert code == 0 and err == ""
    assert "  longer than data.max_length 60: 3 (data.truncation drop-turns: 3 shortened)" in out.splitlines()
    # ... or drops them
    code, out, err = run(["data", "check", str(experiment(60, "drop-sample"))], capsys)
    assert code == 2
    assert "  longer than data.max_length 60: 3 (data.truncation drop-sample: 0 shortened, 3 skipped (too-long))" \
        in out.splitlines()
    assert sorted(line.split("[too-long] sample ")[1].split()[0] for line in err.splitlines()) == [
        "'r2'", "'r3'", "'text'"]


def test_show_marks_exactly_the_replies(experiment, capsys) -> None:
    path = experiment(128)
    code, out, err = run(["data", "show", str(path), "--index", "1"], capsys)
    assert code == 0 and err == ""
    header, body = out.split("-" * 80 + "\n")
    assert header.splitlines()[0].startswith("data.train[1]: record 'r2' (")
    assert "  image 0: " in header and "(40x20, 1 tile(s)) -> 16 tokens" in header
    assert body == ("<|im_start|>user\n<image>×16\nWhat is the shape number 0?<|im_end|>\n<|im_start|>assistant\n"
                    "[[red 0<|im_end|>]]\n<|im_start|>user\nWhat is the shape number 1?<|im_end|>\n"
                    "<|im_start|>assistant\n[[red 1<|im_end|>]]\n\n")
    code, out2, _ = run(["data", "show", str(path), "--id", "r2"], capsys)
    assert code == 0 and out2 == out
    # a truncated sample says so
    code, out, _ = run(["data", "show", str(experiment(60)), "--id", "r3"], capsys)
    assert code == 0 and "truncated from " in out and "by data.truncation drop-turns" in out
    assert out.count("[[") == out.count("]]") >= 1


def test_check_covers_each_stage_own_data(experiment, tmp_path: Path, capsys) -> None:
    path = experiment(128)
    cfg = yaml.safe_load(path.read_text())
    sft = tmp_path / "d" / "sft.jsonl"
    sft.write_text(json.dumps({"id": "s1", "image": "gone.png", "conversations": conversation(1)}) + "\n"
                   + json.dumps({"id": "s2", "image": "a.png", "conversations": conversation(1)}) + "\n")
    cfg["stages"] = [{"name": "align", "max_steps": 1},
                     {"name": "sft", "max_steps": 1, "data": {"train": [{"path": str(sft)}]}}]
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    code, out, err = run(["data", "check", str(path)], capsys)
    assert code == 2
    assert err.splitlines() == [f"error: stages[1].data.train: {sft}:1: [missing-image] record 's1': image file not "
                                f"found: '{tmp_path / 'd' / 'gone.png'}'"]
    assert "data.train: 4 records, 4 usable" in out
    assert "stages[1].data.train: 2 records, 1 usable, 1 with problems (missing-image: 1 ('s1'))" in out


def test_synth_takes_task_weights(tmp_path: Path, capsys) -> None:
    out = tmp_path / "synth"
    assert main(["data", "synth", "--out", str(out), "--num-train", "10", "--num-eval", "4",
                 "--extra-train-questions", "shape", "--train-task-weights", "count=3", "color=0.5"]) == 0
    records = json.loads((out / "train.json").read_text())
    # shares 0.5 : 1 : 1 : 3 of 10 = 0.9, 1.8, 1.8, 5.5 -> 1, 2, 2, 5 (largest remainders)
    assert sorted(r["task"] for r in records).count("count") == 5
    meta = json.loads((out / "synth_meta.json").read_text())
    assert meta["train_task_weights"] == {"color": 0.5, "count": 3.0} and meta["extra_train_questions"] == ["shape"]
    with pytest.raises(SystemExit):
        main(["data", "synth", "--out", str(out), "--train-task-weights", "count"])
    assert "expected TASK=WEIGHT" in capsys.readouterr().err
