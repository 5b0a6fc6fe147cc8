"""Executors are looked up in a registry: the built-ins, one a plugin adds through the usual hook, and located errors
for unknown executors and settings."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pytest

from mmfw import hookimpl
from mmfw.components import collect_registries, make_plugin_manager
from mmfw.config import ConfigError
from mmfw.executors import build_executor
from mmfw.executors.base import ExecutorConfig, OnOutcome, SweepExecutor
from mmfw.executors.local import LocalExecutor
from mmfw.executors.ray import RayExecutor
from mmfw.executors.runs import RunJob, RunOutcome
from mmfw.executors.slurm import SlurmExecutor
from mmfw.registry import UnknownComponentError, component


class QueueExecutorConfig(ExecutorConfig):
    type: Literal["queue"] = "queue"
    queue: str = "default"


@component("queue", config=QueueExecutorConfig)
class QueueExecutor(SweepExecutor):
    """Hands every job to a (pretend) batch queue and reports it done: what a plugin's executor looks like."""

    submitted: list[tuple[str, str]] = []

    def run(self, jobs: Sequence[RunJob], on_outcome: OnOutcome) -> None:
        for job in jobs:
            self.submitted.append((self.cfg.queue, job.name))
            if not on_outcome(job, RunOutcome(status="done")):
                break


class QueuePlugin:
    @hookimpl
    def mmfw_register_components(self, registries) -> None:
        registries.executors.register(QueueExecutor)


def test_builtin_executors_are_registered(registries) -> None:
    assert registries.executors.names() == ["local", "ray", "slurm"]
    assert registries.executors.get("local") is LocalExecutor
    assert registries.executors.get("slurm") is SlurmExecutor and registries.executors.get("ray") is RayExecutor


def test_a_plugin_adds_an_executor_and_the_sweep_file_configures_it(tmp_path: Path) -> None:
    regs = collect_registries(make_plugin_manager(load_entry_points=False, extra_plugins=[QueuePlugin()]))
    assert "queue" in regs.executors and "QueueExecutor" in regs.executors.entry("queue").source
    ex = build_executor(regs, {"type": "queue", "queue": "gpu-long"}, None, study_dir=tmp_path, parallel=3)
    assert isinstance(ex, QueueExecutor) and ex.cfg.queue == "gpu-long" and ex.parallel == 3
    # --executor NAME with another name than the file's: that executor's defaults
    assert isinstance(build_executor(regs, {"type": "queue", "queue": "x"}, "local", study_dir=tmp_path,
                                     parallel=1), LocalExecutor)
    jobs = [RunJob(run_dir=str(tmp_path / n), cwd=str(tmp_path)) for n in ("a", "b")]
    seen: list[str] = []
    ex.run(jobs, lambda job, outcome: seen.append(job.name) or False)  # False: stop after the first
    assert seen == ["a"] and QueueExecutor.submitted[-1] == ("gpu-long", "a")


def test_unknown_executor_and_bad_settings(tmp_path: Path, registries) -> None:
    with pytest.raises(UnknownComponentError, match="unknown sweep executor 'slrum'; did you mean 'slurm'"):
        build_executor(registries, {"type": "local"}, "slrum", study_dir=tmp_path, parallel=1)
    with pytest.raises(ConfigError) as err:
        build_executor(registries, {"type": "slurm", "partiton": "cpu", "timeout_min": 0}, None, study_dir=tmp_path,
                       parallel=1, source="s.yaml")
    assert sorted(err.value.problems) == ["executor.partiton: unknown key",
                                          "executor.timeout_min: Input should be greater than 0"]
    assert str(err.value).startswith("s.yaml: executor.")


@pytest.mark.parametrize(("name", "module"), [("slurm", "submitit"), ("ray", "ray")])
def test_a_missing_cluster_library_is_a_one_line_error(name: str, module: str, tmp_path: Path, registries,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed: importing it raises ImportError
    ex = build_executor(registries, {}, name, study_dir=tmp_path, parallel=1)
    job = RunJob(run_dir=str(tmp_path / "run"), cwd=str(tmp_path))
    with pytest.raises(ConfigError, match=rf'executor.type: {name} needs .*pip install "mmfw\[{name}\]"'):
        ex.run([job], lambda job, outcome: True)


@pytest.mark.parametrize(("code", "status"), [(130, "interrupted"), (3, "failed"), (0, "failed")])
def test_execute_job_tells_failed_from_interrupted(code: int, status: str, tmp_path: Path) -> None:
    """A run stopped by Ctrl-C / SIGTERM resumes next time; any other non-zero exit (or no metrics.json) failed."""
    import json

    from mmfw.executors.runs import execute_job, run_status

    fake = tmp_path / "python"  # stands in for the interpreter that would run `mmfw train`
    fake.write_text(f"#!/bin/sh\necho 'error: data.train[0].path: boom'\nexit {code}\n")
    fake.chmod(0o755)
    run = tmp_path / "run"
    run.mkdir()
    outcome = execute_job(RunJob(run_dir=str(run), cwd=str(tmp_path), python=str(fake)))
    assert outcome.status == status and outcome.returncode == code
    assert not (run / "running.json").exists()
    if status == "failed":
        assert json.loads((run / "outcome.json").read_text())["error"] == "error: data.train[0].path: boom"
        assert run_status(run) == "failed"
    else:
        assert not (run / "outcome.json").exists() and run_status(run) == "pending"
