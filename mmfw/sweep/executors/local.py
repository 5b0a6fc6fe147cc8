"""``local``: runs on this machine, ``--parallel N`` jobs at once (threads that each wait on a training process)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Literal

from mmfw.registry import component
from mmfw.sweep.executors.base import ExecutorConfig, OnOutcome, SweepExecutor
from mmfw.sweep.runs import RunJob, RunOutcome, execute_job, terminate_live_jobs


class LocalExecutorConfig(ExecutorConfig):
    type: Literal["local"] = "local"


@component("local", config=LocalExecutorConfig)
class LocalExecutor(SweepExecutor):
    """Jobs as subprocesses of this process; the order of the plan, ``parallel`` at a time."""

    def run(self, jobs: Sequence[RunJob], on_outcome: OnOutcome) -> None:
        stop = threading.Event()

        def guarded(job: RunJob) -> RunOutcome:
            return RunOutcome(status="skipped") if stop.is_set() else execute_job(job)

        pool = ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="sweep-run")
        try:
            pending: dict[Future, RunJob] = {pool.submit(guarded, job): job for job in jobs}
            while pending:
                finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in finished:
                    job = pending.pop(fut)
                    outcome = fut.result()
                    if outcome.status != "skipped" and not on_outcome(job, outcome):
                        stop.set()
        except BaseException:
            stop.set()
            terminate_live_jobs()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
