"""SIGTERM and Ctrl-C during training: stop at the next step boundary with a checkpoint, say how to resume.

:func:`graceful_stop` installs handlers for SIGTERM and SIGINT that only set :attr:`StopRequest.signal`; the trainer
checks it after each optimizer step (agreeing across processes), writes a checkpoint and raises
:class:`TrainingInterrupted` naming it and the command that continues the run. A second Ctrl-C stops at once
(``KeyboardInterrupt``), as usual.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

from mmfw.training.errors import TrainingError


class TrainingInterrupted(TrainingError):
    """Training stopped on a signal; the message names the checkpoint ``--resume`` continues from."""

    exit_code = 130


@dataclass
class StopRequest:
    signal: str | None = None

    @property
    def requested(self) -> bool:
        return self.signal is not None


@contextmanager
def graceful_stop() -> Iterator[StopRequest]:
    """Within the block, SIGTERM / SIGINT set the returned request instead of killing the process (main thread
    only; elsewhere the request is never set)."""
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handle(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if request.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        request.signal = name

    previous = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield request
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def stop_agreed(stop: StopRequest, acc: Any) -> bool:
    """Whether any process received SIGTERM / SIGINT (all processes agree, so that they stop together)."""
    import torch

    flag = torch.tensor(float(stop.requested), device=acc.device)
    return bool(acc.reduce(flag, "sum") > 0) if acc.num_processes > 1 else bool(flag)
