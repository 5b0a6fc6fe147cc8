"""Running a study: write the run directories, prepare the shared data once, hand the unfinished runs to an
executor, and write the results.

Order of work (``mmfw sweep FILE``): every point is expanded and validated (:func:`mmfw.sweep.expand.plan_study`);
each run directory gets its ``point.yaml`` and ``sweep_run.json``; the synthetic data and tokenizers the runs still
to train ask for are generated here, once each, before any run starts (the runs then find them and write nothing
there, so parallel runs never write the same files); runs that are done are skipped, the others are trained by the
executor (interrupted ones resume); the report is written at the end (also after failures).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmfw.config import ConfigError, dump_config
from mmfw.executors.base import SweepExecutor
from mmfw.executors.runs import OUTCOME, POINT_CONFIG, SWEEP_RUN, RunJob, RunOutcome, read_json, run_status, write_json
from mmfw.sweep.expand import Run, StudyPlan

if TYPE_CHECKING:
    from mmfw.components import Registries

logger = logging.getLogger(__name__)

STUDY_FILE = "study.json"


def default_threads(parallel: int) -> int:
    """Compute threads per run: the cores split between the runs that train at once."""
    return max(1, (os.cpu_count() or 1) // max(1, parallel))


def model_facts(run: Run, registries: Registries) -> dict[str, Any]:
    """Total and trainable parameters and image tokens per image of a run's model (built on the meta device, as
    ``mmfw inspect`` does); empty when the model cannot be built without weights or before its tokenizer exists."""
    from mmfw.inspection import inspect_config

    tok = run.config.data.build_tokenizer
    if tok is not None and not (Path(tok.out_dir) / "tokenizer_config.json").exists():
        return {}  # the tokenizer sizes the vocabulary: known once the shared data is prepared
    syn = run.config.data.synthetic
    size = (syn.width or syn.image_size, syn.image_size) if syn is not None else None  # the data's (width, height)
    try:
        report = inspect_config(run.config, registries, size)
    except Exception as e:  # a pretrained component, a tokenizer that is not built yet, an op the meta device lacks
        logger.debug("no parameter counts for %s: %s", run.name, e)
        return {}
    return {"params_total": report["params"]["total"], "params_trainable": report["params"]["trainable"],
            "image_tokens": report["image_tokens"]}


def run_record(plan: StudyPlan, run: Run, order: int) -> dict[str, Any]:
    """What ``sweep_run.json`` holds: enough to rebuild the study's report from the run directories alone."""
    s = plan.sweep
    return {"order": order, "study": plan.study_dir.name, "sweep_file": str(plan.source), "point": run.point.index,
            "label": run.point.label, "axes": run.point.shown, "seed": run.seed, "fingerprint": run.fingerprint,
            "metric": s.metric, "higher_is_better": s.higher_is_better, "axis_keys": plan.axes}


def write_study(plan: StudyPlan) -> None:
    """The study directory, ``study.json`` and, per run, ``point.yaml`` and ``sweep_run.json``."""
    plan.study_dir.mkdir(parents=True, exist_ok=True)
    write_json(plan.study_dir / STUDY_FILE, {
        "sweep_file": str(plan.source), "metric": plan.sweep.metric, "higher_is_better": plan.sweep.higher_is_better,
        "axes": plan.axes, "seeds": plan.sweep.seeds, "points": [p.label for p in plan.points],
        "runs": [r.name for r in plan.runs]})
    for order, run in enumerate(plan.runs):
        run.run_dir.mkdir(parents=True, exist_ok=True)
        previous = read_json(run.run_dir / SWEEP_RUN) or {}
        record = run_record(plan, run, order)
        if "model" in previous:
            record["model"] = previous["model"]
        write_json(run.run_dir / SWEEP_RUN, record)
        (run.run_dir / POINT_CONFIG).write_text(dump_config(run.config), encoding="utf-8")


def prepare_shared_data(runs: Sequence[Run]) -> int:
    """Generate every synthetic dataset and tokenizer the runs ask for, once each; returns how many were asked."""
    from mmfw.training.data_prep import prepare_data

    seen: set[str] = set()
    for run in runs:
        for stage in run.config.stage_plan():
            d = stage.data
            if d.synthetic is None and d.build_tokenizer is None:
                continue
            key = json.dumps([d.synthetic and d.synthetic.model_dump(mode="json"),
                              d.build_tokenizer and d.build_tokenizer.model_dump(mode="json"),
                              [s.path for s in d.train]], sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            try:
                prepare_data(d)
            except ValueError as e:
                raise ConfigError([f"point {run.point.index} ({run.point.label}): data: {e}"]) from None
    return len(seen)


def record_model_facts(plan: StudyPlan, registries: Registries) -> None:
    """Parameter counts and image tokens into each run's ``sweep_run.json`` (once per point)."""
    by_point: dict[int, dict[str, Any]] = {}
    for run in plan.runs:
        record = read_json(run.run_dir / SWEEP_RUN) or {}
        if record.get("model"):
            by_point.setdefault(run.point.index, record["model"])
            continue
        if run.point.index not in by_point:
            by_point[run.point.index] = model_facts(run, registries)
        record["model"] = by_point[run.point.index]
        write_json(run.run_dir / SWEEP_RUN, record)


def run_study(plan: StudyPlan, executor: SweepExecutor, registries: Registries, threads: int,
              fail_fast: bool = False, on_event: Callable[[str, Run, RunOutcome | None], None] | None = None,
              ) -> dict[str, str]:
    """Train every run of ``plan`` that is not done; returns run name -> status afterwards."""
    write_study(plan)
    statuses = {r.name: run_status(r.run_dir) for r in plan.runs}
    pending = [r for r in plan.runs if statuses[r.name] not in ("done", "running")]
    if pending:  # a finished study needs no data (and its runs' model facts are recorded)
        prepare_shared_data(pending)
    record_model_facts(plan, registries)
    by_dir = {str(r.run_dir.resolve()): r for r in plan.runs}
    if on_event is not None:
        for run in plan.runs:
            if statuses[run.name] in ("done", "running"):
                on_event("skip-" + statuses[run.name], run, None)
    todo = [RunJob(run_dir=str(r.run_dir.resolve()), cwd=os.getcwd(), threads=threads) for r in pending]

    def on_outcome(job: RunJob, outcome: RunOutcome) -> bool:
        run = by_dir[job.run_dir]
        if outcome.status == "failed" and outcome.returncode is None:  # the job died around the training process
            write_json(run.run_dir / OUTCOME, asdict(outcome))
        if on_event is not None:
            on_event(outcome.status, run, outcome)
        return not (fail_fast and outcome.status == "failed")

    if todo:
        executor.run(todo, on_outcome)
    return {r.name: run_status(r.run_dir) for r in plan.runs}
