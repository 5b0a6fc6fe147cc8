"""The progress of a stage: exactly what a checkpoint saves (``trainer_state.json``) and a resume restores.

Together with the model, optimizer, scheduler and RNG states of the checkpoint, it places a resumed run at the
batch it stopped at: the batch order is a function of the seed and the epoch only, so skipping
``batches_in_epoch`` batches of epoch ``epoch`` continues the very same stream.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmfw.training.checkpoint import read_trainer_state


@dataclass
class StageState:
    """Where a stage stands (optimizer steps, position in the batch stream, counters)."""

    stage: str
    total_steps: int
    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    bad_steps: int = 0
    """Steps skipped for a non-finite loss or gradient norm (see ``training.max_bad_steps``)."""
    tokens_seen: int = 0
    """Real (non-padding) tokens trained on by this process."""

    @property
    def done(self) -> bool:
        return self.global_step >= self.total_steps

    def as_dict(self) -> dict[str, Any]:
        """What a checkpoint saves."""
        return asdict(self)

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, stage: str, total_steps: int) -> StageState:
        """The state saved in ``checkpoint`` (counters a checkpoint of an older version lacks start at 0)."""
        saved = read_trainer_state(checkpoint)
        return cls(stage=stage, total_steps=total_steps, global_step=saved["global_step"], epoch=saved["epoch"],
                   batches_in_epoch=saved["batches_in_epoch"], bad_steps=saved.get("bad_steps", 0),
                   tokens_seen=saved.get("tokens_seen", 0))
