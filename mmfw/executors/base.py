"""The executor contract: run a list of jobs somewhere and report each outcome as it arrives.

An executor is a registered component (``registries.executors``; a plugin adds one through the
``mmfw_register_components`` hook like any other component) with its own config class, whose fields are the
executor's settings in the sweep file's ``executor:`` section. Every executor runs
:func:`mmfw.executors.runs.execute_job` for each job (a ``mmfw train`` subprocess), so runs behave the same wherever
they run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path

from mmfw.config.base import ComponentConfig
from mmfw.executors.runs import RunJob, RunOutcome

OnOutcome = Callable[[RunJob, RunOutcome], bool]
"""Called once per finished job, in the sweep's process; returns False to stop starting further jobs."""


class ExecutorConfig(ComponentConfig):
    """Base of executor configs."""

    @classmethod
    def example(cls) -> ExecutorConfig:
        return cls()


class SweepExecutor(ABC):
    """Runs :class:`RunJob` s, at most ``parallel`` at once, each with ``job.threads`` compute threads."""

    def __init__(self, cfg: ExecutorConfig, *, study_dir: Path, parallel: int = 1) -> None:
        self.cfg = cfg
        self.study_dir = Path(study_dir)
        self.parallel = max(1, parallel)

    @abstractmethod
    def run(self, jobs: Sequence[RunJob], on_outcome: OnOutcome) -> None:
        """Run every job (unless ``on_outcome`` returns False: then start no further job) and call ``on_outcome``
        for each job that ran."""
