"""Every generating evaluation writes ``predictions.jsonl``; mid-run evaluations report accuracy; every run draws
``plots/loss.png`` and ``plots/eval_samples.png``, and ``mmfw plot RUN`` redraws them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from mmfw.cli.main import main
from mmfw.config import load_config_dict
from mmfw.data.synth import normalize_answer
from mmfw.training.evaluate import read_predictions
from mmfw.training.plots import choose_samples, plot_eval_samples, run_steps
from mmfw.training.trainer import Trainer


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, registries, synth_data, tiny_model) -> Path:
    out = tmp_path_factory.mktemp("plots") / "run"
    exp = {
        "name": "plots", "seed": 0, "output_dir": str(out), "model": tiny_model,
        "data": {"train": [{"path": str(synth_data.train)}], "eval": [{"path": str(synth_data.eval)}],
                 "max_length": 96, "eval_max_samples": 12},
        "training": {"max_steps": 12, "batch_size": 8, "learning_rate": 3e-3, "log_every": 3, "eval_every": 6,
                     "policy": {"vision_encoder": "full"}, "max_new_tokens": 3, "trackers": []},
    }
    Trainer(load_config_dict(exp, registries), registries, progress=False).train()
    return out


def test_mid_run_evaluation_reports_accuracy(run_dir: Path) -> None:
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval/loss" in r]
    assert [r["step"] for r in evals] == [6, 12]
    assert all("eval/accuracy" in r and r["eval/num_samples"] == 12 for r in evals)


def test_predictions_file_matches_the_final_accuracy(run_dir: Path, synth_data) -> None:
    predictions = read_predictions(run_dir / "predictions.jsonl")
    eval_records = json.loads(Path(synth_data.eval).read_text())[:12]
    assert [p["id"] for p in predictions] == [r["id"] for r in eval_records]
    for p, record in zip(predictions, eval_records, strict=True):
        assert set(p) == {"id", "question", "reference", "prediction", "correct", "task", "images", "step"}
        assert p["question"] == record["conversations"][0]["value"].replace("<image>", "").strip()
        assert p["reference"] == record["conversations"][1]["value"] and p["task"] == record["task"]
        assert p["correct"] == (normalize_answer(p["prediction"]) == normalize_answer(p["reference"]))
        assert Path(p["images"][0]).name == Path(record["image"]).name and p["step"] == 12
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["eval"]["accuracy"] == pytest.approx(sum(p["correct"] for p in predictions) / 12)


def test_run_draws_both_plots_and_mmfw_plot_redraws_them(run_dir: Path, capsys) -> None:
    loss, samples = run_dir / "plots" / "loss.png", run_dir / "plots" / "eval_samples.png"
    with Image.open(loss) as im:
        assert im.format == "PNG" and im.size == (800, 450)
    with Image.open(samples) as im:
        assert im.format == "PNG" and im.size[0] == 4 * 260  # 12 samples: 4 columns, 3 rows
    loss.unlink()
    samples.unlink()
    assert main(["plot", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert loss.exists() and samples.exists() and str(loss) in out and str(samples) in out


def test_mmfw_plot_on_a_directory_without_a_run_exits_2(tmp_path: Path, capsys) -> None:
    assert main(["plot", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "metrics.jsonl" in err and len(err.strip().splitlines()) == 1


def test_stages_continue_the_step_axis() -> None:
    records = [{"step": 5, "stage": "align"}, {"step": 10, "stage": "align"}, {"step": 5, "stage": "finetune"},
               {"step": 20, "stage": "finetune"}]
    assert run_steps(records) == ([5, 10, 15, 30], [(0, "align"), (10, "finetune")])
    assert run_steps([{"step": 1}, {"step": 2}]) == ([1, 2], [])


def test_sample_choice_shows_wrong_answers_first_but_keeps_file_order() -> None:
    preds = [{"id": i, "correct": i % 3 != 0} for i in range(30)]  # 10 wrong, 20 right
    chosen = choose_samples(preds, 8)
    assert [p["id"] for p in chosen] == [0, 1, 2, 3, 4, 5, 6, 9]  # 4 wrong (0, 3, 6, 9) and 4 right
    assert len(choose_samples(preds[:3], 8)) == 3
    all_wrong = [{"id": i, "correct": False} for i in range(10)]
    assert [p["id"] for p in choose_samples(all_wrong, 8)] == list(range(8))


def test_no_sample_grid_without_images(tmp_path: Path) -> None:
    preds = [{"question": "q", "reference": "a", "prediction": "a", "correct": True, "images": []}]
    assert plot_eval_samples(preds, tmp_path / "x.png") is None and not (tmp_path / "x.png").exists()
