"""Errors that stop a training run with a one-line message (the CLI prints them without a traceback).

Kept free of heavy imports so the CLI can catch them without importing torch.
"""

from __future__ import annotations


class TrainingError(Exception):
    """Base of errors that end a run for a reason the user can act on."""


class NonFiniteLossError(TrainingError):
    """The loss (or the gradient norm) was NaN or infinite more often than ``training.max_bad_steps`` allows."""


class RunExistsError(TrainingError):
    """The run directory already holds progress and neither resuming nor overwriting was asked for."""
