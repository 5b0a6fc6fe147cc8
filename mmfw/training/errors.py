"""Errors that stop a training run with a one-line message (defined in :mod:`mmfw.errors`, re-exported here)."""

from mmfw.errors import NonFiniteLossError, RunExistsError, TrainingError

__all__ = ["NonFiniteLossError", "RunExistsError", "TrainingError"]
