"""Runs ``mmfw`` (``python train_driver.py ARGS`` = ``mmfw ARGS``) with optional test hooks set by environment:

* ``DRIVER_STALL_AFTER_CHECKPOINT=N``: once checkpoint ``step-N`` is committed, training goes on for two
  micro-batches, then stops in the middle of the third (after its forward pass, before its backward), writes
  ``DRIVER_MARKER`` and sleeps, so the test can SIGKILL a process that is really mid-training.
* ``DRIVER_KILL_DURING_SAVE=N``: the process SIGKILLs itself while checkpoint ``step-N`` is half written (weights
  written, tokenizer and trainer state not yet, directory not renamed).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path


def _install_hooks() -> None:
    stall = os.environ.get("DRIVER_STALL_AFTER_CHECKPOINT")
    kill_save = os.environ.get("DRIVER_KILL_DURING_SAVE")
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


if __name__ == "__main__":
    _install_hooks()
    from mmfw.cli.main import main

    sys.exit(main(sys.argv[1:]))
