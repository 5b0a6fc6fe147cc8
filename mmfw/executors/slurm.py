"""``slurm``: one Slurm job per run through submitit (``pip install "mmfw[slurm]"``).

At most ``--parallel`` jobs are queued at once; each asks for ``threads`` CPUs (``--threads``) and the resources
below. ``cluster: local`` runs the same jobs as local processes through submitit (for tests and for trying a study
file before sending it to a cluster); ``cluster: debug`` runs them in this process. The study directory must be on
a file system the compute nodes share, and mmfw must be installed there with the same Python path.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import Field

from mmfw.config import ConfigError
from mmfw.executors.base import ExecutorConfig, OnOutcome, SweepExecutor
from mmfw.executors.runs import RunJob, RunOutcome, execute_job
from mmfw.registry import component


class SlurmExecutorConfig(ExecutorConfig):
    type: Literal["slurm"] = "slurm"
    cluster: Literal["slurm", "local", "debug"] | None = None
    """submitit's cluster: ``None`` picks Slurm when it is available, else local processes."""
    partition: str | None = None
    timeout_min: int = Field(60, gt=0)
    gpus_per_node: int = Field(0, ge=0)
    mem_gb: float | None = Field(None, gt=0)
    additional_parameters: dict[str, Any] = {}
    """Passed as ``slurm_additional_parameters`` (e.g. ``{account: my-lab, qos: short}``)."""
    folder: str | None = None
    """Where submitit keeps job pickles and logs; default ``STUDY/submitit``."""
    poll_s: float = Field(2.0, gt=0)


@component("slurm", config=SlurmExecutorConfig)
class SlurmExecutor(SweepExecutor):
    cfg: SlurmExecutorConfig

    def _executor(self, threads: int) -> Any:
        try:
            import submitit
        except ImportError:
            raise ConfigError(['executor.type: slurm needs submitit: pip install "mmfw[slurm]"']) from None
        c = self.cfg
        ex = submitit.AutoExecutor(folder=str(c.folder or self.study_dir / "submitit"), cluster=c.cluster)
        params: dict[str, Any] = {"timeout_min": c.timeout_min, "cpus_per_task": threads, "name": "mmfw-sweep"}
        if c.gpus_per_node:
            params["gpus_per_node"] = c.gpus_per_node
        if c.mem_gb is not None:
            params["mem_gb"] = c.mem_gb
        if c.partition is not None:
            params["slurm_partition"] = c.partition
        if c.additional_parameters:
            params["slurm_additional_parameters"] = dict(c.additional_parameters)
        ex.update_parameters(**params)
        return ex

    def run(self, jobs: Sequence[RunJob], on_outcome: OnOutcome) -> None:
        if not jobs:
            return
        ex = self._executor(jobs[0].threads)
        queue = list(jobs)
        in_flight: list[tuple[Any, RunJob]] = []
        go_on = True
        try:
            while queue or in_flight:
                while go_on and queue and len(in_flight) < self.parallel:
                    job = queue.pop(0)
                    in_flight.append((ex.submit(execute_job, job), job))
                if not go_on:
                    queue.clear()
                still = []
                for sjob, job in in_flight:
                    if not sjob.done():
                        still.append((sjob, job))
                        continue
                    try:
                        outcome = sjob.result()
                    except Exception as e:  # the job itself failed (killed, timed out, node failure)
                        outcome = RunOutcome(status="failed", error=f"{type(e).__name__}: {str(e).strip()[-300:]}")
                    go_on = on_outcome(job, outcome) and go_on
                in_flight = still
                if in_flight:
                    time.sleep(self.cfg.poll_s)
        except BaseException:
            for sjob, _ in in_flight:
                sjob.cancel(check=False)
            raise
