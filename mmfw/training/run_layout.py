"""Where a training run keeps its files, and what a run directory already holds.

Layout::

    RUN_DIR/config.yaml  metrics.jsonl  metrics.json  predictions.jsonl  plots/  tensorboard/
    RUN_DIR/model/                         the final model (a model directory, see mmfw.model.io)
    RUN_DIR/checkpoints/step-N/            single-stage runs
    RUN_DIR/stages/NAME/checkpoints/step-N multi-stage runs; NAME/model is the output of a stage but the last
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from mmfw.config import ConfigError, ExperimentConfig, load_config, save_config
from mmfw.config.experiment import ResolvedStage
from mmfw.config.loader import RESOLVED_CONFIG_NAME
from mmfw.model.builder import WEIGHTS_NAME
from mmfw.model.io import FINAL_MODEL_DIR
from mmfw.training.checkpoint import latest_checkpoint, remove_stale
from mmfw.training.data_prep import prepare_data
from mmfw.training.errors import RunExistsError
from mmfw.training.evaluate import PREDICTIONS_FILE
from mmfw.training.plots import PLOTS_DIR

logger = logging.getLogger(__name__)

METRICS_LOG = "metrics.jsonl"
FINAL_METRICS = "metrics.json"
STAGES_DIR = "stages"
STAGE_DONE = "stage.json"
"""Written into a stage's output directory before it is published: the stage's name, steps and final metrics."""
TENSORBOARD_DIR = "tensorboard"
RUN_ENTRIES = (RESOLVED_CONFIG_NAME, METRICS_LOG, FINAL_METRICS, FINAL_MODEL_DIR, "checkpoints", STAGES_DIR,
               TENSORBOARD_DIR, PREDICTIONS_FILE, PLOTS_DIR)
"""Everything a training run writes into its run directory (and :func:`clear_run` deletes)."""


def stage_dir(run_dir: Path, stage: ResolvedStage) -> Path:
    """Where a stage keeps its checkpoints (the run directory itself for a single-stage run)."""
    return run_dir if stage.implicit else run_dir / STAGES_DIR / stage.name


def stage_output_dir(run_dir: Path, stage: ResolvedStage, last: bool) -> Path:
    return run_dir / FINAL_MODEL_DIR if last else stage_dir(run_dir, stage) / FINAL_MODEL_DIR


def stage_record(output_dir: Path) -> dict[str, Any] | None:
    """The completion record of a stage output, or ``None`` if the stage has not finished."""
    path = output_dir / STAGE_DONE
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else None


def run_progress(run_dir: Path, cfg: ExperimentConfig) -> list[str]:
    """What a run directory already holds (finished stages, checkpoints), as short descriptions."""
    plan = cfg.stage_plan()
    found = []
    for stage in plan:
        out = stage_output_dir(run_dir, stage, stage.index == len(plan) - 1)
        if stage_record(out) is not None or (out / WEIGHTS_NAME).exists():
            found.append(f"stage {stage.name!r} finished")
        elif ckpt := latest_checkpoint(stage_dir(run_dir, stage)):
            found.append(f"stage {stage.name!r} checkpoint {ckpt.name}")
    return found


def clear_run(run_dir: Path) -> None:
    """Delete what a training run writes in ``run_dir`` (and nothing else)."""
    for name in RUN_ENTRIES:
        p = run_dir / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()


def check_resumable(run_dir: Path, cfg: ExperimentConfig, registries: Any) -> None:
    """Raise :class:`ConfigError` unless ``cfg`` can continue the run saved in ``run_dir`` (same model and stages);
    warn when other sections differ (the result will not be the one of an uninterrupted run)."""
    saved = load_config(run_dir / RESOLVED_CONFIG_NAME, registries)
    if saved.model != cfg.model:
        raise ConfigError([f"model: differs from the run being resumed ({run_dir / RESOLVED_CONFIG_NAME}); "
                           "start a new run (another output_dir) or --overwrite"])
    names, saved_names = [s.name for s in cfg.stage_plan()], [s.name for s in saved.stage_plan()]
    if names != saved_names:
        raise ConfigError([f"stages: {names} differ from the run being resumed ({saved_names})"])
    changed = [k for k in ("seed", "data", "training", "stages") if getattr(saved, k) != getattr(cfg, k)]
    if changed:
        logger.warning("resuming with a config that differs from the run's in %s; the result will not be the "
                       "one of an uninterrupted run", changed)


def check_run_dir(run_dir: Path, cfg: ExperimentConfig, registries: Any, resume: bool, overwrite: bool) -> list[str]:
    """What ``run_dir`` already holds (:func:`run_progress`); an error if that is something and neither ``resume``
    nor ``overwrite`` is set, or if ``resume`` would continue a run of another model or other stages."""
    progress = run_progress(run_dir, cfg) if run_dir.exists() else []
    if progress and not (resume or overwrite):
        raise RunExistsError(f"{run_dir} already holds a run ({'; '.join(progress)}); pass --resume to "
                             "continue it or --overwrite to start over")
    if resume and (run_dir / RESOLVED_CONFIG_NAME).exists():
        check_resumable(run_dir, cfg, registries)
    return progress


def start_run_dir(run_dir: Path, cfg: ExperimentConfig, progress: list[str], overwrite: bool) -> None:
    """Create ``run_dir`` (first deleting the previous run's files with ``overwrite``) and save the resolved config."""
    if progress and overwrite:
        logger.warning("--overwrite: deleting the previous run in %s (%s)", run_dir, "; ".join(progress))
        clear_run(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(cfg, run_dir / RESOLVED_CONFIG_NAME)


def prepare_stage_dir(stage_path: Path, stage: ResolvedStage) -> None:
    """Before a stage trains (main process): its generated data and tokenizer exist, its directory exists, and
    what an interrupted save left there is gone."""
    prepare_data(stage.data)
    stage_path.mkdir(parents=True, exist_ok=True)
    for stale in remove_stale(stage_path):
        logger.info("removed %s (left by an interrupted save)", stale)


def write_final_metrics(run_dir: Path, final: dict[str, float], per_stage: dict[str, dict[str, float]] | None,
                        steps: int) -> None:
    """``metrics.json``: the final stage's metrics nested by group (``{"eval": {"loss": ...}}``), and with
    ``per_stage`` (multi-stage runs) every stage's."""
    nested: dict[str, Any] = {}
    for key, value in final.items():
        group, _, name = key.partition("/")
        nested.setdefault(group, {})[name] = value
    nested.setdefault("run", {})["steps"] = int(final.get("run/steps", steps))
    if per_stage is not None:
        nested["stages"] = per_stage
    (run_dir / FINAL_METRICS).write_text(json.dumps(nested, indent=2) + "\n", encoding="utf-8")
