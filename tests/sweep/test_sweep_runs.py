"""Studies that train (tiny: 4 steps per run): shared data prepared once, skip of finished runs, exact resume of an
interrupted one, failure recording and ``--fail-fast``, and the same table from ``--parallel 2``, submitit's local
executor and a local Ray."""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path

import pytest

from mmfw.cli.main import main
from mmfw.executors.runs import read_json, run_status
from mmfw.sweep.report import TIMING_COLUMNS
from tests.sweep.conftest import write_sweep

pytestmark = pytest.mark.slow

# the columns that are a function of the configs (timing and the executor's host left out)
VOLATILE = (*TIMING_COLUMNS, "error")


def table(study: Path) -> list[dict[str, str]]:
    rows = list(csv.DictReader(open(study / "results.csv", encoding="utf-8")))
    return [{k: v for k, v in r.items() if k not in VOLATILE} for r in rows]


CONNECTORS = {"mlp": {"type": "mlp"}, "resampler": {"type": "resampler", "num_queries": 4}}


def sweep_body(base: Path, study: Path, points: tuple[str, ...] = tuple(CONNECTORS), **extra) -> dict:
    return {"base": str(base), "output_dir": str(study),
            "grid": {"model.connector": {p: CONNECTORS[p] for p in points}}, "seeds": [0], **extra}


@pytest.fixture(scope="module")
def sequential(tmp_path_factory: pytest.TempPathFactory, shared_data_dir: Path) -> dict:
    """The reference study, run sequentially with one thread per run."""
    import yaml

    from tests.sweep.conftest import tiny_base

    root = tmp_path_factory.mktemp("sequential")
    base = root / "base.yaml"
    base.write_text(yaml.safe_dump(tiny_base(shared_data_dir), sort_keys=False))
    study = root / "study"
    sweep = write_sweep(root, sweep_body(base, study))
    assert main(["sweep", str(sweep), "--threads", "1"]) == 0
    return {"root": root, "base": base, "sweep": sweep, "study": study, "table": table(study)}


def test_study_writes_results_and_prepares_data_once(sequential: dict) -> None:
    study = sequential["study"]
    rows = sequential["table"]
    assert [(r["label"], r["status"]) for r in rows] == [("mlp", "done"), ("resampler", "done")]
    assert rows[0]["model.connector"] == "mlp" and rows[1]["model.connector"] == "resampler(num_queries=4)"
    assert int(rows[0]["image_tokens"]) == 16 and int(rows[1]["image_tokens"]) == 4
    assert int(rows[1]["params_total"]) > int(rows[1]["params_trainable"]) > 0
    assert float(rows[0]["train.loss"]) > 0 and 0 <= float(rows[0]["eval.accuracy"]) <= 1
    assert {"eval.accuracy/color", "eval.accuracy/count", "run.steps"} <= set(rows[0])
    full = list(csv.DictReader(open(study / "results.csv", encoding="utf-8")))
    assert all(float(r["wall_s"]) > 0 and float(r["peak_rss_mb"]) > 50 and float(r["tokens_per_s"]) > 0
               for r in full)
    for name in ("results.md", "plots/metric_by_axis.png", "plots/loss_curves.png", "plots/per_task.png"):
        assert (study / name).is_file()
    for run_dir in sorted((study / "runs").iterdir()):
        log = (run_dir / "train.log").read_text()
        # the sweep generated the data and the tokenizer before the runs: each run only found them
        assert "reusing synthetic VQA dataset" in log and "generated synthetic VQA" not in log
        assert "training a 300-token tokenizer" not in log
        assert read_json(run_dir / "outcome.json")["threads"] == 1


def test_second_run_trains_nothing_and_an_interrupted_run_resumes(sequential: dict, capsys) -> None:
    study, sweep = sequential["study"], sequential["sweep"]
    runs = sorted((study / "runs").iterdir())
    stamps = {d: (d / "outcome.json").stat().st_mtime_ns for d in runs}
    capsys.readouterr()
    assert main(["sweep", str(sweep), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("(not trained again)") == 2
    assert {d: (d / "outcome.json").stat().st_mtime_ns for d in runs} == stamps
    # make the resampler run look killed after its step-2 checkpoint: no final model, no metrics.json
    victim = runs[1]
    assert (victim / "checkpoints" / "step-2").is_dir()
    shutil.rmtree(victim / "model")
    (victim / "metrics.json").unlink()
    (victim / "outcome.json").unlink()
    assert run_status(victim) == "interrupted"
    assert main(["sweep", str(sweep), "--threads", "1"]) == 0
    assert "resumed stage 'train' from" in (victim / "train.log").read_text()
    assert (runs[0] / "outcome.json").stat().st_mtime_ns == stamps[runs[0]]
    assert table(study) == sequential["table"]  # the resumed run ends exactly where the uninterrupted one did


def test_parallel_runs_give_the_same_table(sequential: dict) -> None:
    study = sequential["root"] / "parallel"
    sweep = write_sweep(sequential["root"], sweep_body(sequential["base"], study), "parallel.yaml")
    assert main(["sweep", str(sweep), "--parallel", "2", "--threads", "1"]) == 0
    assert table(study) == sequential["table"]


def test_slurm_executor_through_submitit_gives_the_same_table(sequential: dict) -> None:
    pytest.importorskip("submitit")
    study = sequential["root"] / "slurm"
    sweep = write_sweep(sequential["root"], sweep_body(sequential["base"], study, ("mlp",), executor={
        "type": "slurm", "cluster": "local", "poll_s": 0.2, "timeout_min": 10}), "slurm.yaml")
    assert main(["sweep", str(sweep), "--threads", "1"]) == 0
    assert table(study) == sequential["table"][:1]  # one run is enough to tell a different result
    assert list((study / "submitit").glob("*_log.out"))  # the jobs went through submitit


def test_failed_runs_are_recorded_and_fail_fast_stops(sequential: dict, capsys) -> None:
    root = sequential["root"]
    bad = root / "bad.json"
    bad.write_text("this is not JSON")
    study = root / "failing"
    sweep = write_sweep(root, {"base": str(sequential["base"]), "output_dir": str(study), "seeds": [0],
                               "set": {"training.max_steps": 1, "training.save_every": 1},
                               "grid": {"data.eval": {"broken": [{"path": str(bad)}], "fine": []}}}, "failing.yaml")
    assert main(["sweep", str(sweep), "--threads", "1", "--fail-fast"]) == 1
    runs = {d.name.split("-s0-")[0]: d for d in (study / "runs").iterdir()}
    assert run_status(runs["broken"]) == "failed" and run_status(runs["fine"]) == "pending"
    outcome = read_json(runs["broken"] / "outcome.json")
    assert outcome["returncode"] == 2 and outcome["error"].startswith("error: [bad-json] data.eval[0].path:")
    capsys.readouterr()
    assert main(["sweep", str(sweep), "--threads", "1"]) == 1  # the broken run fails again, the others go on
    captured = capsys.readouterr()
    assert "1 run(s) failed" in captured.err
    assert run_status(runs["broken"]) == "failed" and run_status(runs["fine"]) == "done"
    rows = {r["label"]: r for r in csv.DictReader(open(study / "results.csv", encoding="utf-8"))}
    assert rows["broken"]["status"] == "failed" and rows["broken"]["error"].startswith("error: [bad-json] data.eval[0]")
    assert rows["fine"]["status"] == "done"
    assert "Failed runs:" in (study / "results.md").read_text()


def test_ray_executor_gives_the_same_table(sequential: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ray")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's socket paths must stay short
    try:
        study = sequential["root"] / "ray"
        sweep = write_sweep(sequential["root"], sweep_body(sequential["base"], study, ("mlp",), executor={
            "type": "ray", "temp_dir": str(temp)}), "ray.yaml")
        assert main(["sweep", str(sweep), "--executor", "ray", "--threads", "1"]) == 0
        assert table(study) == sequential["table"][:1]
        import ray

        assert not ray.is_initialized()  # shut down by the executor that started it
    finally:
        shutil.rmtree(temp, ignore_errors=True)
