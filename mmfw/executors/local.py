"""``local``: runs on this machine, ``--parallel N`` jobs at once (threads that each wait on a training process)."""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Literal

from mmfw.executors.base import ExecutorConfig, OnOutcome, SweepExecutor
from mmfw.executors.runs import RunJob, execute_job, terminate_live_jobs
from mmfw.registry import component


class LocalExecutorConfig(ExecutorConfig):
    type: Literal["local"] = "local"


@component("local", config=LocalExecutorConfig)
class LocalExecutor(SweepExecutor):
    """Jobs as subprocesses of this process, in the plan's order, at most ``parallel`` at a time; a job starts only
    after the outcomes before it were handled (so ``--fail-fast`` starts nothing after a failure)."""

    def run(self, jobs: Sequence[RunJob], on_outcome: OnOutcome) -> None:
        queue = list(jobs)
        running: dict[Future, RunJob] = {}
        go_on = True
        with ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="sweep-run") as pool:
            try:
                while running or (go_on and queue):
                    while go_on and queue and len(running) < self.parallel:
                        job = queue.pop(0)
                        running[pool.submit(execute_job, job)] = job
                    finished, _ = wait(running, return_when=FIRST_COMPLETED)
                    for fut in finished:
                        go_on = on_outcome(running.pop(fut), fut.result()) and go_on
            except BaseException:
                terminate_live_jobs()
                raise
