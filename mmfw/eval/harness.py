"""``mmfw eval``: run lmms-eval tasks on an mmfw run through ``lmms_eval.evaluator.simple_evaluate``.

The tasks shipped in ``mmfw/eval/tasks/`` are always on the include path; ``include_paths`` add the user's own.
The ``mmfw_synth`` task reads ``data/synth/hf_eval``, which :func:`prepare_synth_task` (re)writes from
``data/synth/eval.json`` when it is missing or older, so the harness scores the questions ``mmfw train`` scored.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmfw.data.errors import DataError

logger = logging.getLogger(__name__)

TASKS_DIR = Path(__file__).with_name("tasks")
SYNTH_TASK = "mmfw_synth"
SYNTH_EVAL_JSON = Path("data/synth/eval.json")
SYNTH_HF_DIR = Path("data/synth/hf_eval")
INSTALL_HINT = 'lmms-eval is not installed; `pip install -e ".[eval]"` (in the mmfw checkout) brings it'


class EvalError(Exception):
    """A problem with an ``mmfw eval`` request (missing harness, unknown task, missing data), one line."""


def prepare_synth_task(eval_json: Path = SYNTH_EVAL_JSON, out_dir: Path = SYNTH_HF_DIR) -> Path:
    """The ``mmfw_synth`` data folder, written from ``eval_json`` when missing or older than it."""
    from mmfw.eval.hf_dataset import write_hf_dataset

    if not eval_json.is_file():
        if out_dir.is_dir():
            return out_dir
        raise EvalError(f"task {SYNTH_TASK!r} reads {out_dir}, written from {eval_json}, which does not exist here; "
                        "run from the directory that holds data/synth (`mmfw data synth` writes it)")
    stamp = out_dir / "dataset_dict.json"
    if not stamp.exists() or stamp.stat().st_mtime < eval_json.stat().st_mtime:
        logger.info("writing %s from %s", out_dir, eval_json)
        try:
            write_hf_dataset(eval_json, out_dir)
        except DataError as e:
            raise EvalError(str(e)) from None
    return out_dir


def _task_manager(tasks: Sequence[str], include_paths: Sequence[str | Path]) -> Any:
    """A TaskManager over mmfw's and the user's tasks; lmms-eval's own tasks are indexed only if needed."""
    from lmms_eval.tasks import TaskManager

    paths = [str(TASKS_DIR), *(str(p) for p in include_paths)]
    for p in paths[1:]:
        if not Path(p).is_dir():
            raise EvalError(f"--include-path {p}: not a directory")
    manager = TaskManager("WARNING", include_path=paths, include_defaults=False)
    if not all(t in manager.all_tasks for t in tasks):
        manager = TaskManager("WARNING", include_path=paths, include_defaults=True)
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        from mmfw.registry import format_choices

        raise EvalError(f"unknown lmms-eval task(s) {unknown}; {format_choices(unknown[0], manager.all_tasks)}")
    return manager


def run_lmms_eval(run_dir: str | Path, tasks: Sequence[str], include_paths: Sequence[str | Path] = (),
                  limit: int | None = None, batch_size: int = 8, device: str = "cpu") -> dict[str, Any]:
    """Evaluate the run (or model directory) ``run_dir`` on lmms-eval ``tasks``; returns simple_evaluate's result
    (``results[task][metric]``, ``n-samples``, ...). lmms-eval reports a failure by raising."""
    try:
        from lmms_eval.evaluator import simple_evaluate
    except ImportError as e:
        raise EvalError(f"{INSTALL_HINT} ({e})") from None
    from mmfw.eval.lmms_model import MMFWLmms

    if SYNTH_TASK in tasks:
        prepare_synth_task()
    manager = _task_manager(tasks, include_paths)
    model = MMFWLmms(pretrained=str(run_dir), device=device, batch_size=batch_size)
    results = simple_evaluate(model=model, tasks=list(tasks), limit=limit, task_manager=manager, log_samples=True,
                              batch_size=batch_size, device=device, verbosity="WARNING")
    if results is None:
        raise EvalError("lmms-eval returned no results")
    return results


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The JSON-serialisable part of a simple_evaluate result: per-task metrics, sample counts, task versions."""
    keep = {k: results[k] for k in ("results", "n-samples", "versions") if k in results}
    return json.loads(json.dumps(keep, default=str))
