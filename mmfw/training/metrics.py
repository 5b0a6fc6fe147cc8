"""Training metrics: ``metrics.jsonl`` and the trackers (:class:`MetricsLogger`), and the loss and throughput of a
logging window (:class:`ThroughputMeter`)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator

from mmfw.config.experiment import ResolvedStage
from mmfw.training.run_layout import METRICS_LOG
from mmfw.training.state import StageState


class MetricsLogger:
    """Appends records to ``RUN_DIR/metrics.jsonl`` (main process) and sends numbers to the trackers.

    A record is ``{"step": N, "stage": NAME (multi-stage runs), **values}`` with ``N`` the step of the current
    stage's ``state``; trackers get the numbers under ``NAME/`` (multi-stage runs) at ``tracker_step``, the
    optimizer steps of every stage so far.
    """

    def __init__(self, acc: Accelerator, run_dir: Path) -> None:
        self.acc, self.path = acc, run_dir / METRICS_LOG
        self.stage: ResolvedStage | None = None
        self.state: StageState | None = None
        self.tracker_step = 0

    def start(self, resume: bool) -> None:
        """Create an empty log (kept when resuming a run that has one)."""
        if not (resume and self.path.exists()):
            self.path.write_text("", encoding="utf-8")

    def log(self, values: dict[str, Any]) -> None:
        if not self.acc.is_main_process:
            return
        implicit = self.stage is None or self.stage.implicit
        record = {"step": self.state.global_step if self.state is not None else 0, **({} if implicit else {"stage": self.stage.name}), **values}
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        if self.acc.log_with:
            numbers = {k: v for k, v in values.items() if isinstance(v, int | float)}
            if not implicit:
                numbers = {f"{self.stage.name}/{k}": v for k, v in numbers.items()}
            self.acc.log(numbers, step=self.tracker_step)

    def log_window(self, meter: ThroughputMeter, lr: float, bar: Any) -> dict[str, float]:
        """Log the metrics of ``meter``'s window (as ``train/...``), show them on the progress ``bar``; returns them."""
        last = meter.flush(lr)
        if "loss" in last:  # a window of skipped (non-finite) steps has no loss to report
            bar.set_postfix(loss=f"{last['loss']:.4f}", tok_s=f"{last['tokens_per_s']:.0f}")
        self.log({f"train/{k}": v for k, v in last.items()})
        return last


class ThroughputMeter:
    """Mean loss of the good steps of a window, real tokens per second (all processes) and token efficiency
    (real / computed tokens: what padding costs)."""

    def __init__(self, acc: Accelerator) -> None:
        self.acc = acc
        self._reset()

    def _reset(self) -> None:
        self.loss, self.steps, self.real, self.computed = 0.0, 0, 0, 0
        self.start = time.perf_counter()

    def add(self, loss: float, good: bool, real: int, computed: int) -> None:
        if good:
            self.loss += loss
            self.steps += 1
        self.real += real
        self.computed += computed

    def flush(self, lr: float) -> dict[str, float]:
        """The window's metrics (no ``loss`` when every step of it was skipped); starts a new window."""
        elapsed = time.perf_counter() - self.start
        counts = self.acc.reduce(torch.tensor([self.real, self.computed], device=self.acc.device), "sum")
        real, computed = int(counts[0]), int(counts[1])
        out = {"lr": lr, "tokens_per_s": real / max(elapsed, 1e-9), "token_efficiency": real / max(computed, 1)}
        if self.steps:
            out = {"loss": self.loss / self.steps, **out}
        self._reset()
        return out
