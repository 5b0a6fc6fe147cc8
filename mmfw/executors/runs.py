"""One run of a study: its directory, its status, and the job that trains it (a ``mmfw train`` subprocess).

Every executor runs :func:`execute_job` wherever it runs jobs (a thread here, a Slurm job, a Ray task): it trains
``RUN/point.yaml`` with ``python -m mmfw train ... --resume`` in a fresh process with ``threads`` compute threads, so
an interrupted run continues from its last checkpoint and a run never shares a process with another. Files the sweep
adds to a run directory (next to what ``mmfw train`` writes)::

    RUN/sweep_run.json   the point (label, axis values), seed, fingerprint, study settings, parameter counts
    RUN/point.yaml       the resolved experiment config that is trained
    RUN/train.log        stdout and stderr of the training process
    RUN/running.json     while a job trains it (host, pid)
    RUN/outcome.json     how the last job ended: status, return code, error line, wall time, peak memory

A run is **done** when ``metrics.json`` exists (``mmfw train`` writes it last).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

RUNS_DIR = "runs"
"""A study's run directories live under ``STUDY/runs/``."""

SWEEP_RUN = "sweep_run.json"
POINT_CONFIG = "point.yaml"
TRAIN_LOG = "train.log"
RUNNING = "running.json"
OUTCOME = "outcome.json"
FINAL_METRICS = "metrics.json"
METRICS_LOG = "metrics.jsonl"

_INTERRUPTED_CODES = (130, -signal.SIGINT, -signal.SIGTERM)
"""Return codes of a training process stopped by Ctrl-C or SIGTERM (``mmfw train`` exits 130 on Ctrl-C)."""

STATUSES = ("done", "running", "failed", "interrupted", "pending")

_LIVE: set[subprocess.Popen] = set()
_LIVE_LOCK = threading.Lock()
_STOPPING = threading.Event()
"""Set by :func:`terminate_live_jobs`: the processes it stops are interrupted runs, not failed ones."""


@dataclass(frozen=True)
class RunJob:
    """What an executor needs to train one run (picklable; paths absolute)."""

    run_dir: str
    cwd: str
    threads: int = 1
    python: str = sys.executable
    env: dict[str, str] = field(default_factory=dict)
    """Extra environment variables of the training process."""

    def command(self) -> list[str]:
        return [self.python, "-m", "mmfw", "train", str(Path(self.run_dir) / POINT_CONFIG), "--resume",
                "--no-progress"]

    @property
    def name(self) -> str:
        return Path(self.run_dir).name


@dataclass(frozen=True)
class RunOutcome:
    """How one job ended."""

    status: str
    """``done``, ``failed`` or ``interrupted`` (stopped by the sweep itself: not recorded as failed)."""
    returncode: int | None = None
    error: str | None = None
    wall_s: float | None = None
    peak_rss_mb: float | None = None
    threads: int | None = None
    host: str | None = None


def _error_line(log: Path) -> str:
    """The most telling line of a failed run's log: the last ``error:`` line, else the last line."""
    try:
        lines = [ln.strip() for ln in log.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    errors = [ln for ln in lines if ln.startswith("error:")]
    return (errors[-1] if errors else lines[-1] if lines else "no output")[:500]


def thread_env(threads: int) -> dict[str, str]:
    n = str(max(1, threads))
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n, "TOKENIZERS_PARALLELISM": "false"}


def execute_job(job: RunJob) -> RunOutcome:
    """Train one run in a subprocess and record how it ended in ``outcome.json`` (see module docstring)."""
    run_dir = Path(job.run_dir)
    host = socket.gethostname()
    (run_dir / RUNNING).write_text(json.dumps({"host": host, "pid": os.getpid(), "started": time.time()}) + "\n",
                                   encoding="utf-8")
    env = {**os.environ, **thread_env(job.threads), **job.env}
    start = time.perf_counter()
    with open(run_dir / TRAIN_LOG, "ab") as log:
        log.write(f"\n$ {' '.join(job.command())}\n".encode())
        log.flush()
        proc = subprocess.Popen(job.command(), cwd=job.cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
        with _LIVE_LOCK:
            _LIVE.add(proc)
        try:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(proc)
            if proc.returncode is None:
                proc.terminate()
                proc.wait()
    wall = time.perf_counter() - start
    stopped = proc.returncode in _INTERRUPTED_CODES or (_STOPPING.is_set() and proc.returncode != 0)
    if stopped:  # Ctrl-C, SIGTERM, or the sweep stopping it: an interrupted run, which resumes next time
        (run_dir / RUNNING).unlink(missing_ok=True)
        return RunOutcome(status="interrupted", returncode=proc.returncode, wall_s=round(wall, 2), threads=job.threads,
                          host=host)
    done = proc.returncode == 0 and (run_dir / FINAL_METRICS).exists()
    outcome = RunOutcome(status="done" if done else "failed", returncode=proc.returncode,
                         error=None if done else _error_line(run_dir / TRAIN_LOG), wall_s=round(wall, 2),
                         peak_rss_mb=round(usage.ru_maxrss / 1024, 1), threads=job.threads, host=host)
    write_json(run_dir / OUTCOME, asdict(outcome))
    (run_dir / RUNNING).unlink(missing_ok=True)
    return outcome


def terminate_live_jobs() -> None:
    """Stop every training process this process started (on Ctrl-C / SIGTERM of the sweep)."""
    _STOPPING.set()
    with _LIVE_LOCK:
        procs = list(_LIVE)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def _alive(info: dict[str, Any]) -> bool:
    if info.get("host") != socket.gethostname():
        return True  # another machine (a cluster job): trust the marker
    try:
        os.kill(int(info["pid"]), 0)
    except (OSError, KeyError, ValueError):
        return False
    return True


def run_status(run_dir: Path) -> str:
    """``done``, ``running``, ``failed``, ``interrupted`` (checkpoints but no result: resumes) or ``pending``."""
    if (run_dir / FINAL_METRICS).exists():
        return "done"
    running = read_json(run_dir / RUNNING)
    if running is not None and _alive(running):
        return "running"
    outcome = read_json(run_dir / OUTCOME)
    if outcome is not None and outcome.get("status") == "failed":
        return "failed"
    if any(run_dir.glob("checkpoints/step-*")) or any(run_dir.glob("stages/*/checkpoints/step-*")):
        return "interrupted"
    return "pending"


def study_runs(study_dir: Path) -> list[tuple[Path, dict[str, Any]]]:
    """(run directory, its ``sweep_run.json``) of every run of a study, in plan order."""
    found = []
    root = Path(study_dir) / RUNS_DIR
    for d in sorted(root.iterdir()) if root.is_dir() else ():
        info = read_json(d / SWEEP_RUN)
        if info is not None:
            found.append((d, info))
    return sorted(found, key=lambda x: (x[1].get("order", 0), x[0].name))
