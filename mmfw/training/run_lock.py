"""One trainer per run directory: an exclusive lock on ``RUN_DIR/.lock`` (``flock``), held for the whole run.

A second ``mmfw train`` on the same output directory (a second terminal, a job scheduled twice, processes of an
``accelerate launch`` that did not form one group) would interleave its logs and checkpoints with the first one's.
:func:`acquire_run_lock` refuses it with the pid, host and start time of the holder. The operating system releases
the lock when the holder exits, however it exits (a killed process never leaves a stale lock behind).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import IO, Any

from mmfw.training.errors import TrainingError

LOCK_NAME = ".lock"


class RunLockedError(TrainingError):
    """Another process trains into the same run directory."""


class RunLock:
    """A held lock; :meth:`release` (or process exit) frees it."""

    def __init__(self, path: Path, handle: IO[str]) -> None:
        self.path, self._handle = path, handle

    def release(self) -> None:
        if self._handle is not None and not self._handle.closed:
            import fcntl

            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def _holder(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}


def acquire_run_lock(run_dir: str | Path) -> RunLock:
    """Lock ``run_dir`` (created if needed) for this process, or raise :class:`RunLockedError` naming the holder."""
    import fcntl

    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held until release
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        info = _holder(path)
        who = f"pid {info.get('pid', '?')}"
        if info.get("host") and info.get("host") != socket.gethostname():
            who += f" on {info['host']}"
        since = f", started {info['started']}" if info.get("started") else ""
        raise RunLockedError(f"{run_dir} is being written by another training ({who}{since}); wait for it to end, "
                             "stop it, or train into another output_dir") from None
    handle.seek(0)
    handle.truncate()
    handle.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": time.strftime("%Y-%m-%d %H:%M:%S")}))
    handle.flush()
    return RunLock(path, handle)


def check_process_group(num_processes: int, environ: dict[str, str] | None = None) -> None:
    """Raise when a launcher started this process as one of several (``WORLD_SIZE`` > 1) but Accelerate formed a
    group of ``num_processes`` = 1: every process would then train alone into the same run directory."""
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
    except ValueError:
        return
    if world > 1 and num_processes != world:
        rank = env.get("RANK", env.get("LOCAL_RANK", "?"))
        raise ProcessGroupError(
            f"this process was launched as rank {rank} of {world} (WORLD_SIZE={world}), but Accelerate formed a group "
            f"of {num_processes} process(es): the processes do not train together and would overwrite each other's "
            "run. On a machine without GPUs use `mmfw train CONFIG --num-processes N` (gloo on CPU) or set "
            "ACCELERATE_USE_CPU=1 for `accelerate launch` (see docs/distributed.md)")


class ProcessGroupError(TrainingError):
    """Processes launched together that do not form one training group."""
