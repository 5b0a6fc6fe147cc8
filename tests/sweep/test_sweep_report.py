"""The report is rebuilt from run directories alone: results.csv, results.md (mean ± std, best point, seed noise)
and the plots; run states for ``mmfw sweep status``."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from mmfw.cli.main import main
from mmfw.executors.runs import run_status
from mmfw.sweep.report import beyond_noise, mean_std, write_report


def fake_run(study: Path, name: str, point: int, label: str, seed: int, acc: float | None, losses: list[float],
             status: str = "done") -> Path:
    d = study / "runs" / name
    d.mkdir(parents=True)
    info = {"order": point * 10 + seed, "point": point, "label": label, "axes": {"model.connector": label},
            "seed": seed, "fingerprint": name[-12:], "metric": "eval.accuracy", "higher_is_better": True,
            "axis_keys": ["model.connector"], "model": {"params_total": 1000 + point, "params_trainable": 900,
                                                        "image_tokens": 16}}
    (d / "sweep_run.json").write_text(json.dumps(info))
    log = [{"step": 10 * (i + 1), "train/loss": v, "train/tokens_per_s": 100.0 + i} for i, v in enumerate(losses)]
    (d / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in log) + "\n")
    if status == "done":
        (d / "metrics.json").write_text(json.dumps({
            "train": {"loss": losses[-1], "lr": 0.0}, "eval": {"loss": 1.0, "accuracy": acc,
                                                              "accuracy/color": acc, "accuracy/count": acc / 2},
            "run": {"steps": 10 * len(losses)}}))
        (d / "outcome.json").write_text(json.dumps({"status": "done", "wall_s": 30.0 + seed, "peak_rss_mb": 500.0}))
    elif status == "failed":
        (d / "outcome.json").write_text(json.dumps({"status": "failed", "returncode": 2,
                                                    "error": "error: data.eval[0].path: not JSON"}))
    elif status == "interrupted":
        (d / "checkpoints" / "step-10").mkdir(parents=True)
    return d


def test_report_from_run_directories(tmp_path: Path, capsys) -> None:
    study = tmp_path / "study"
    fake_run(study, "a-s0-aaaaaaaaaaa0", 0, "mlp", 0, 0.80, [2.0, 1.0])
    fake_run(study, "a-s1-aaaaaaaaaaa1", 0, "mlp", 1, 0.82, [2.1, 0.9])
    fake_run(study, "b-s0-bbbbbbbbbbb0", 1, "resampler", 0, 0.60, [2.0, 1.5])
    fake_run(study, "b-s1-bbbbbbbbbbb1", 1, "resampler", 1, 0.64, [2.2, 1.4])
    fake_run(study, "c-s0-ccccccccccc0", 2, "merger", 0, 0.78, [2.0, 1.0])
    fake_run(study, "c-s1-ccccccccccc1", 2, "merger", 1, 0.83, [2.0, 1.0])
    fake_run(study, "d-s0-ddddddddddd0", 3, "broken", 0, None, [2.0], status="failed")
    fake_run(study, "d-s1-ddddddddddd1", 3, "broken", 1, None, [2.0], status="interrupted")
    out = write_report(study)
    assert out["statuses"] == {"done": 6, "failed": 1, "interrupted": 1}
    rows = list(csv.DictReader(open(study / "results.csv", encoding="utf-8")))
    assert [r["label"] for r in rows] == ["mlp", "mlp", "resampler", "resampler", "merger", "merger", "broken",
                                          "broken"]
    first = rows[0]
    assert first["model.connector"] == "mlp" and first["seed"] == "0" and first["status"] == "done"
    assert float(first["eval.accuracy"]) == 0.8 and float(first["eval.accuracy/count"]) == 0.4
    assert float(first["train.loss"]) == 1.0 and first["params_total"] == "1000" and first["image_tokens"] == "16"
    assert float(first["tokens_per_s"]) == 100.5 and float(first["wall_s"]) == 30.0
    assert "train.lr" not in first
    assert rows[6]["status"] == "failed" and rows[6]["error"] == "error: data.eval[0].path: not JSON"
    md = (study / "results.md").read_text(encoding="utf-8")
    assert "| **mlp** | 2/2 | **0.810 ± 0.014** |" in md
    assert "| resampler | 2/2 | 0.620 ± 0.028 |" in md
    assert "| broken | 0/2 | - |" in md
    # mlp and merger overlap; both are apart from the resampler
    assert "`eval.accuracy` beyond seed noise" in md and "mlp vs resampler (+0.190)" in md.split("Within seed noise")[0]
    assert "mlp vs merger (+0.005)" in md.split("Within seed noise")[1]
    assert "- `d-s0-ddddddddddd0`: error: data.eval[0].path: not JSON" in md
    for name in ("metric_by_axis.png", "loss_curves.png", "per_task.png"):
        assert (study / "plots" / name).stat().st_size > 5000
    # `mmfw sweep report` rebuilds the same files; `status` lists each run
    (study / "results.csv").unlink()
    assert main(["sweep", "report", str(study)]) == 0
    assert list(csv.DictReader(open(study / "results.csv", encoding="utf-8"))) == rows
    capsys.readouterr()
    assert main(["sweep", "status", str(study)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "6 done, 1 failed, 1 interrupted"
    assert any(ln.startswith("failed") and "not JSON" in ln for ln in lines)


def test_status_of_a_run_directory(tmp_path: Path) -> None:
    d = tmp_path / "run"
    d.mkdir()
    assert run_status(d) == "pending"
    (d / "running.json").write_text(json.dumps({"host": os.uname().nodename, "pid": os.getpid()}))
    assert run_status(d) == "running"
    (d / "running.json").write_text(json.dumps({"host": os.uname().nodename, "pid": 2**22 + 7}))  # no such process
    assert run_status(d) == "pending"
    (d / "checkpoints" / "step-3").mkdir(parents=True)
    assert run_status(d) == "interrupted"
    (d / "outcome.json").write_text(json.dumps({"status": "failed"}))
    assert run_status(d) == "failed"
    (d / "metrics.json").write_text("{}")
    assert run_status(d) == "done"


def test_seed_noise_rule() -> None:
    assert mean_std([1.0, 3.0]) == (2.0, 2.0 ** 0.5)
    assert mean_std([1.0]) == (1.0, None)
    assert beyond_noise([0.8, 0.82], [0.6, 0.64])
    assert not beyond_noise([0.8, 0.9], [0.79, 0.84])  # ranges overlap
    assert not beyond_noise([0.8], [0.6])  # one seed: no noise estimate
    assert not beyond_noise([0.5, 0.9], [0.3, 0.45])  # apart, but the gap is within two standard errors


def test_status_and_report_of_a_missing_study(tmp_path: Path, capsys) -> None:
    assert main(["sweep", "status", str(tmp_path / "nope")]) == 2
    assert main(["sweep", "report", str(tmp_path)]) == 2
    assert main(["sweep", "status"]) == 2
    err = capsys.readouterr().err
    assert "not a directory" in err and "no runs" in err and "needs the study directory" in err
