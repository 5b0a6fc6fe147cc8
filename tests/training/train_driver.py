"""Runs ``mmfw`` (``python train_driver.py ARGS`` = ``mmfw ARGS``) with optional test hooks set by environment; with
``train --num-processes N`` the processes that ``accelerate launch`` starts run this driver too, so the hooks apply in
every process:

* ``DRIVER_STALL_AFTER_CHECKPOINT=N``: once checkpoint ``step-N`` is committed, training goes on for two
  micro-batches, then stops in the middle of the third (after its forward pass, before its backward), writes
  ``DRIVER_MARKER`` and sleeps, so the test can SIGKILL a process that is really mid-training.
* ``DRIVER_KILL_DURING_SAVE=N``: the process SIGKILLs itself while checkpoint ``step-N`` is half written (weights
  written, tokenizer and trainer state not yet, directory not renamed).
* ``DRIVER_RECORD_BATCHES=DIR``: every batch a streamed loader gives the trainer is appended to
  ``DIR/batches-RANK.jsonl`` as ``{"batch": N, "ids": [...]}`` (``N``: the process's batch count since the start
  of the run, kept across a resume), so a test can see which records each process trained on.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path


def driver_command(cmd: list[str]) -> list[str]:
    """The ``accelerate launch ... -m mmfw ARGS`` command of ``mmfw train --num-processes N``, with every process
    running this file (same arguments) instead of ``mmfw``."""
    k = len(cmd) - 1 - cmd[::-1].index("-m")
    assert "accelerate.commands.launch" in cmd and cmd[k + 1] == "mmfw", cmd
    return [*cmd[:k], str(Path(__file__).resolve()), *cmd[k + 2:]]


def _launch_ranks_through_driver() -> None:
    import subprocess

    original_call = subprocess.call

    def call(cmd, *args, **kwargs):  # type: ignore[no-untyped-def]
        return original_call(driver_command(cmd) if "accelerate.commands.launch" in cmd else cmd, *args, **kwargs)

    subprocess.call = call


def _install_hooks() -> None:
    stall = os.environ.get("DRIVER_STALL_AFTER_CHECKPOINT")
    kill_save = os.environ.get("DRIVER_KILL_DURING_SAVE")
    record = os.environ.get("DRIVER_RECORD_BATCHES")
    if record:
        _record_stream_batches(Path(record))
    if not (stall or kill_save):
        return
    from mmfw.training import saving, step

    if stall:
        state = {"armed": False, "calls": 0}
        original_commit, original_loss = saving.commit_checkpoint, step.token_loss_sum

        def commit(tmp, step, trainer_state, keep_last):  # type: ignore[no-untyped-def]
            out = original_commit(tmp, step, trainer_state, keep_last)
            state["armed"] = state["armed"] or step == int(stall)
            return out

        def loss(logits, labels, positions=None):  # type: ignore[no-untyped-def]
            value = original_loss(logits, labels, positions)
            state["calls"] += state["armed"]
            if state["calls"] == 3:
                Path(os.environ["DRIVER_MARKER"]).write_text("stalled")
                time.sleep(600)
            return value

        saving.commit_checkpoint, step.token_loss_sum = commit, loss
    if kill_save:
        original_write = saving.write_model_dir

        def write(model, tokenizer, cfg, directory, state_dict=None):  # type: ignore[no-untyped-def]
            if Path(directory).name == f".step-{kill_save}.tmp":
                from safetensors.torch import save_file

                from mmfw.training.lora import plain_state_dict

                save_file({k: v.contiguous() for k, v in plain_state_dict(model).items()},
                          str(Path(directory) / "model.safetensors"))
                os.kill(os.getpid(), signal.SIGKILL)  # weights written; tokenizer, config, trainer state not yet
            return original_write(model, tokenizer, cfg, directory, state_dict)

        saving.write_model_dir = write


def _record_stream_batches(directory: Path) -> None:
    from mmfw.data.stream_loader import StreamLoader

    original_iter = StreamLoader.__iter__

    def iterate(self):  # type: ignore[no-untyped-def]
        path = directory / f"batches-{self.dataset.rank}.jsonl"
        for batch in original_iter(self):
            with path.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"batch": self.consumed, "ids": list(batch.ids)}) + "\n")
            yield batch

    StreamLoader.__iter__ = iterate


if __name__ == "__main__":
    _launch_ranks_through_driver()
    _install_hooks()
    from mmfw.cli.main import main

    sys.exit(main(sys.argv[1:]))
