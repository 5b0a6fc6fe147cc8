"""``ray``: one Ray task per run (``pip install "mmfw[ray]"``).

``ray.init()`` joins the cluster at ``address`` (or ``RAY_ADDRESS``); without either it starts a local Ray with
``parallel x threads`` CPUs and workers at normal priority (Ray's default is nice 15). Each task asks for
``threads`` CPUs (``num_cpus_per_run`` to override) and ``num_gpus_per_run`` GPUs, so Ray decides how many run at
once. Nodes need mmfw installed and the study directory on a shared file system.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from mmfw.config import ConfigError
from mmfw.executors.base import ExecutorConfig, OnOutcome, SweepExecutor
from mmfw.executors.runs import RunJob, RunOutcome, execute_job
from mmfw.registry import component


class RayExecutorConfig(ExecutorConfig):
    type: Literal["ray"] = "ray"
    address: str | None = None
    """A running cluster (``auto``, ``ray://host:10001``); ``None``: ``RAY_ADDRESS`` or a new local Ray."""
    num_cpus_per_run: float | None = Field(None, gt=0)
    num_gpus_per_run: float = Field(0, ge=0)
    temp_dir: str | None = None
    """Session directory of a local Ray (``_temp_dir``); default Ray's own."""


@component("ray", config=RayExecutorConfig)
class RayExecutor(SweepExecutor):
    cfg: RayExecutorConfig

    def _init(self, threads: int) -> Any:
        try:
            import ray
        except ImportError:
            raise ConfigError(['executor.type: ray needs Ray: pip install "mmfw[ray]"']) from None
        if ray.is_initialized():
            return ray, False
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        address = self.cfg.address or os.environ.get("RAY_ADDRESS")
        if address:
            kwargs["address"] = address
        else:
            kwargs["num_cpus"] = self.parallel * max(1, threads)
            # Ray starts workers at nice 15; a training run is the job here, not background work (on a busy machine
            # a niced run barely progresses)
            kwargs["_system_config"] = {"worker_niceness": 0}
            if self.cfg.temp_dir is not None:
                kwargs["_temp_dir"] = os.path.abspath(self.cfg.temp_dir)
        ray.init(**kwargs)
        return ray, True

    def run(self, jobs: Sequence[RunJob], on_outcome: OnOutcome) -> None:
        if not jobs:
            return
        ray, started = self._init(jobs[0].threads)
        try:
            task = ray.remote(execute_job).options(
                num_cpus=self.cfg.num_cpus_per_run or jobs[0].threads, num_gpus=self.cfg.num_gpus_per_run,
                max_retries=0)
            refs = {task.remote(job): job for job in jobs}
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                job = refs.pop(ready[0])
                try:
                    outcome = ray.get(ready[0])
                except Exception as e:  # the task died (worker crash, node lost)
                    outcome = RunOutcome(status="failed", error=f"{type(e).__name__}: {str(e).strip()[-300:]}")
                if not on_outcome(job, outcome):
                    for ref in refs:
                        ray.cancel(ref)  # a running task is interrupted: execute_job stops its process
                    break
        finally:
            if started:
                ray.shutdown()
