"""Faults during training, through the real CLI: a damaged latest checkpoint, a full disk while saving, two trainers
on one run directory, SIGTERM, a saved config edited to another model size, processes that do not form one group.

Each asserts the one-line message (run directory, checkpoint, pid), that the previous state is intact, and, where a
run continues, that ``--resume`` ends with exactly the weights of the uninterrupted run (CPU, one thread).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from mmfw.training.checkpoint import checkpoint_dirs, checkpoint_problem
from tests.cli.catalogue_utils import REPO, assert_fails, assert_no_traceback, assert_ok, cli, subprocess_env

pytestmark = pytest.mark.slow

STEPS = 6


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _exp(tiny_model: dict[str, Any], synth_data: Any, run_dir: Path, **training: Any) -> dict[str, Any]:
    records = json.loads(Path(synth_data.train).read_text())[:32]
    train = run_dir.parent / "train.json"
    train.write_text(json.dumps(records))
    return {"name": "fault", "seed": 0, "output_dir": str(run_dir), "model": tiny_model,
            "data": {"train": [{"path": str(train), "image_root": str(Path(synth_data.train).parent)}],
                     "max_length": 96},
            "training": {"max_steps": STEPS, "batch_size": 8, "learning_rate": 3e-3, "warmup_ratio": 0.0,
                         "log_every": 1, "save_every": 2, "keep_last": 3, "trackers": [],
                         "policy": {"vision_encoder": "full"}, **training}}


def _write(exp: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "model.safetensors"))


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    assert [k for k in a if not torch.equal(a[k], b[k])] == []


@pytest.fixture(scope="module")
def reference(tiny_model, synth_data, tmp_path_factory) -> dict[str, Any]:
    """An uninterrupted run: its config and final weights (checkpoints at steps 2 and 4 kept)."""
    root = tmp_path_factory.mktemp("reference")
    torch.set_num_threads(1)
    exp = _exp(tiny_model, synth_data, root / "run")
    config = _write(exp, root / "exp.yaml")
    assert_ok(cli(["-q", "train", config, "--no-progress"]))
    return {"exp": exp, "run": root / "run", "weights": _weights(root / "run")}


def _interrupted_copy(reference: dict[str, Any], tmp_path: Path) -> tuple[Path, Path]:
    """The reference run as it was before its end: checkpoints step-2 and step-4, no final model."""
    run = tmp_path / "run"
    shutil.copytree(reference["run"], run)
    shutil.rmtree(run / "model")
    (run / "metrics.json").unlink()
    exp = dict(reference["exp"], output_dir=str(run))
    return run, _write(exp, tmp_path / "exp.yaml")


@pytest.mark.parametrize("damage", ["weights", "optimizer", "trainer-state"])
def test_damaged_latest_checkpoint_resumes_from_the_previous_one(damage: str, reference, tmp_path, caplog) -> None:
    run, config = _interrupted_copy(reference, tmp_path)
    step4 = run / "checkpoints" / "step-4"
    target = {"weights": step4 / "model.safetensors", "optimizer": step4 / "state" / "optimizer.bin",
              "trainer-state": step4 / "trainer_state.json"}[damage]
    data = target.read_bytes()
    target.write_bytes(data[: len(data) // 2])
    assert checkpoint_problem(step4) is not None and checkpoint_problem(run / "checkpoints" / "step-2") is None
    with caplog.at_level("WARNING"):
        res = cli(["train", config, "--resume", "--no-progress"])
    assert_ok(res)
    assert any("resuming from" in r.message and "step-2" in r.message and "step-4" in r.message
               for r in caplog.records), [r.message for r in caplog.records]
    _assert_same(_weights(run), reference["weights"])


def test_full_disk_during_a_checkpoint_keeps_the_previous_one(reference, tmp_path, monkeypatch) -> None:
    import mmfw.training.saving as saving_module

    run = tmp_path / "run"
    config = _write(dict(reference["exp"], output_dir=str(run)), tmp_path / "exp.yaml")
    real = saving_module.write_model_dir
    calls = []

    def write(model: Any, tokenizer: Any, cfg: Any, directory: Any, *a: Any) -> Any:
        calls.append(directory)
        if len(calls) == 2:  # the checkpoint of step 4: the disk is full half-way
            real(model, tokenizer, cfg, directory, *a)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(Path(directory) / "model.safetensors"))
        return real(model, tokenizer, cfg, directory, *a)

    monkeypatch.setattr(saving_module, "write_model_dir", write)
    res = cli(["train", config, "--no-progress"])
    assert_fails(res, "checkpoint step-4", "No space left on device", "needs about", "MiB",
                 "previous checkpoint", "step-2 is intact")
    assert [p.name for p in checkpoint_dirs(run)] == ["step-2"]
    assert not list((run / "checkpoints").glob(".step-*"))  # the partial write is gone
    assert checkpoint_problem(run / "checkpoints" / "step-2") is None
    monkeypatch.setattr(saving_module, "write_model_dir", real)
    assert_ok(cli(["train", config, "--resume", "--no-progress"]))
    _assert_same(_weights(run), reference["weights"])


_LIMITED = """
import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
from mmfw.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def test_size_limited_files_first_checkpoint(reference, tmp_path) -> None:
    """A real failing write (RLIMIT_FSIZE in a child process): no checkpoint is left half-written."""
    run = tmp_path / "run"
    config = _write(dict(reference["exp"], output_dir=str(run)), tmp_path / "exp.yaml")
    limit = (reference["run"] / "model" / "model.safetensors").stat().st_size // 2
    proc = subprocess.run([sys.executable, "-c", _LIMITED, str(limit), "-q", "train", str(config), "--no-progress"],
                          capture_output=True, text=True, env=subprocess_env(), cwd=REPO, timeout=300)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, proc.stderr
    assert "writing checkpoint step-2 failed" in proc.stderr and "needs about" in proc.stderr, proc.stderr
    assert "no earlier checkpoint" in proc.stderr
    assert checkpoint_dirs(run) == [] and not list((run / "checkpoints").glob(".step-*"))


def _start(config: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mmfw", "train", str(config), "--no-progress", *extra],
                            env=subprocess_env(), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_step(run: Path, step: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.time() + timeout
    log = run / "metrics.jsonl"
    while True:
        if log.exists() and any(json.loads(x).get("step", 0) >= step for x in log.read_text().splitlines() if x):
            return
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "training did not reach the step in time"
        time.sleep(0.2)


def test_sigterm_writes_a_checkpoint_and_resume_is_exact(reference, tmp_path) -> None:
    run = tmp_path / "run"
    config = _write(dict(reference["exp"], output_dir=str(run)), tmp_path / "exp.yaml")
    proc = _start(config)
    _wait_for_step(run, 1, proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=180)
    assert "Traceback" not in err, err
    assert proc.returncode == 130, err
    assert "stopped by SIGTERM" in err and "--resume" in err, err
    ckpts = checkpoint_dirs(run)
    assert ckpts and all(checkpoint_problem(c) is None for c in ckpts)
    assert f"checkpoint {ckpts[-1]}" in err
    assert_ok(cli(["train", config, "--resume", "--no-progress"]))
    _assert_same(_weights(run), reference["weights"])


def test_second_trainer_on_the_same_run_is_refused_with_the_first_ones_pid(reference, tmp_path) -> None:
    run = tmp_path / "run"
    config = _write(dict(reference["exp"], output_dir=str(run)), tmp_path / "exp.yaml")
    first = _start(config)
    try:
        _wait_for_step(run, 1, first)
        before = (run / "metrics.jsonl").read_text()
        res = cli(["train", config, "--no-progress"])
        assert_fails(res, str(run), f"pid {first.pid}", "another training")
        res = cli(["train", config, "--resume", "--no-progress"])
        assert_fails(res, f"pid {first.pid}")
        assert (run / "metrics.jsonl").read_text().startswith(before)  # nothing of the second one in the log
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=180)
    assert_ok(cli(["train", config, "--resume", "--no-progress"]))  # the lock went with the first process
    _assert_same(_weights(run), reference["weights"])


def test_saved_config_edited_to_another_model_size(reference, tmp_path) -> None:
    run = tmp_path / "run"
    shutil.copytree(reference["run"], run)
    saved = run / "model" / "config.yaml"
    cfg = yaml.safe_load(saved.read_text())
    cfg["model"]["llm"]["architecture"]["intermediate_size"] = 64
    saved.write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = cli(["generate", run, "--prompt", "What colour?"])
    assert_fails(res, str(run), "differ in shape", "mlp", "checkpoint [")
    res = cli(["export", run, tmp_path / "out"])
    assert_fails(res, "differ in shape")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_resume_with_an_edited_run_config_names_the_change(reference, tmp_path) -> None:
    run, config = _interrupted_copy(reference, tmp_path)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["model"]["llm"]["architecture"]["intermediate_size"] = 64
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    res = cli(["train", run, "--no-progress"])
    assert_fails(res, str(run), "shape")
    assert [p.name for p in checkpoint_dirs(run)] == ["step-2", "step-4"]  # nothing was touched


def test_processes_that_do_not_form_one_group_are_refused(reference, tmp_path) -> None:
    """What ``accelerate launch`` of a GPU config does on a CPU machine: each process has WORLD_SIZE=2 but trains
    alone. Simulated here by the launcher's environment on a single process."""
    config = _write(dict(reference["exp"], output_dir=str(tmp_path / "run")), tmp_path / "exp.yaml")
    proc = subprocess.run([sys.executable, "-m", "mmfw", "train", str(config), "--no-progress"], cwd=REPO,
                          env=subprocess_env(WORLD_SIZE="2", RANK="1"), capture_output=True, text=True, timeout=300)
    assert_no_traceback(type("R", (), {"text": proc.stdout + proc.stderr})())
    assert proc.returncode == 2, proc.stderr
    assert "rank 1 of 2" in proc.stderr and "do not train together" in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_training_state_loads_without_unpickling(reference) -> None:
    """Every file of a checkpoint's ``state/`` (optimizer, scheduler, RNG) loads with ``weights_only=True`` (plus
    Accelerate's allowlist of numpy array types for the RNG state: no arbitrary global), the weights are
    safetensors, and mmfw's own code never calls an unrestricted ``torch.load`` or ``pickle.load``."""
    import re

    from accelerate.utils.other import TORCH_SAFE_GLOBALS

    state = reference["run"] / "checkpoints" / "step-4" / "state"
    files = sorted(p for p in state.iterdir() if p.is_file())
    assert files
    for path in files:
        with torch.serialization.safe_globals(TORCH_SAFE_GLOBALS):
            torch.load(path, weights_only=True, map_location="cpu")
    for src in (REPO / "mmfw").rglob("*.py"):
        text = src.read_text()
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (src, call)
        assert "pickle.load" not in text and "pickle.loads" not in text, src
